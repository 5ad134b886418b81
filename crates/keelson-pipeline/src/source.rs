//! Source files and spans: every model value remembers where in which file it was written.

use std::sync::Arc;

/// Index of a file in a [`SourceMap`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u32);

/// A region of a source file. `line` is 1-based, `col` is 1-based in characters,
/// `len` is the length in characters (0 for a point).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    pub file: FileId,
    pub line: u32,
    pub col: u32,
    pub len: u32,
}

impl Span {
    /// The span `offset` characters further on the same line (used for expressions inside a string).
    pub fn shifted(self, offset: u32, len: u32) -> Span {
        Span {
            col: self.col + offset,
            len,
            ..self
        }
    }
}

/// One loaded file: its display name (relative to the project root) and text.
#[derive(Clone, Debug)]
pub struct SourceFile {
    pub name: Arc<str>,
    pub text: Arc<str>,
}

/// All files that make up a pipeline (the root file and its includes).
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    pub fn add(&mut self, name: &str, text: &str) -> FileId {
        self.files.push(SourceFile {
            name: name.into(),
            text: text.into(),
        });
        FileId((self.files.len() - 1) as u32)
    }

    pub fn file(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    pub fn name(&self, id: FileId) -> &str {
        &self.file(id).name
    }

    /// The text of 1-based line `line` of a file, without its line break.
    pub fn line_text(&self, id: FileId, line: u32) -> Option<&str> {
        if line == 0 {
            return None;
        }
        self.file(id).text.lines().nth(line as usize - 1)
    }

    /// `file:line:col` for a span.
    pub fn location(&self, span: Span) -> String {
        format!("{}:{}:{}", self.name(span.file), span.line, span.col)
    }
}
