//! Diagnostics: every problem in a pipeline file, each with file:line:column, the source line with
//! a caret under the offending part, and a hint on what to do.

use std::fmt::Write as _;

use crate::source::{SourceMap, Span};

/// How bad a diagnostic is. Only errors stop a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub span: Span,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            span,
            message: message.into(),
            hint: None,
        }
    }

    pub fn warning(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(span, message)
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    /// Renders as
    /// ```text
    /// error: unknown key `neeeds`
    ///   --> .keelson.yml:4:5
    ///    |
    ///  4 |     neeeds: [lint]
    ///    |     ^^^^^^
    ///    = hint: did you mean `needs`?
    /// ```
    pub fn render(&self, sources: &SourceMap) -> String {
        let mut out = String::new();
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let _ = writeln!(out, "{label}: {}", self.message);
        let _ = writeln!(out, "  --> {}", sources.location(self.span));
        if let Some(line) = sources.line_text(self.span.file, self.span.line) {
            let number = self.span.line.to_string();
            let gutter = " ".repeat(number.len());
            let line = line.replace('\t', " ");
            let indent = " ".repeat(self.span.col.saturating_sub(1) as usize);
            let available = line
                .chars()
                .count()
                .saturating_sub(self.span.col as usize - 1);
            let carets = (self.span.len as usize).clamp(1, available.max(1));
            let _ = writeln!(out, " {gutter} |");
            let _ = writeln!(out, " {number} | {line}");
            let _ = writeln!(out, " {gutter} | {indent}{}", "^".repeat(carets));
            if let Some(hint) = &self.hint {
                let _ = writeln!(out, " {gutter} = hint: {hint}");
            }
        } else if let Some(hint) = &self.hint {
            let _ = writeln!(out, "   = hint: {hint}");
        }
        out
    }
}

/// A collection of diagnostics, kept in source order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics {
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.items.push(diagnostic);
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn error_count(&self) -> usize {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// Sorts by file, line, column (stable for equal positions) and drops exact repeats.
    pub fn sort(&mut self) {
        self.items
            .sort_by_key(|d| (d.span.file, d.span.line, d.span.col, d.severity));
        self.items.dedup();
    }

    /// All diagnostics rendered, followed by a one-line count.
    pub fn render(&self, sources: &SourceMap) -> String {
        let mut out = String::new();
        for diagnostic in &self.items {
            out.push_str(&diagnostic.render(sources));
            out.push('\n');
        }
        let errors = self.error_count();
        let warnings = self.items.len() - errors;
        let _ = writeln!(
            out,
            "{errors} error{}, {warnings} warning{}",
            if errors == 1 { "" } else { "s" },
            if warnings == 1 { "" } else { "s" }
        );
        out
    }
}

/// "did you mean" for a misspelt name among `candidates`.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(name, candidate), candidate))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| format!("did you mean `{candidate}`?"))
}
