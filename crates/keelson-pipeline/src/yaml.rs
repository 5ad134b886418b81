//! YAML → a small tree where every node knows its span. Built on saphyr-parser events so that
//! duplicate keys, scalar styles and exact positions survive (serde-style loading loses them).

use std::collections::HashMap;

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, Span as YamlSpan};

use crate::diag::Diagnostic;
use crate::source::{FileId, Span};

/// How a scalar was written; quoted scalars are always strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Plain,
    Quoted,
    Block,
}

/// A YAML node with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub span: Span,
    pub kind: NodeKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    Scalar {
        value: String,
        style: Style,
        /// Whether character offsets in `value` map 1:1 onto columns after `span.col`
        /// (plus one for the opening quote of a quoted scalar).
        exact: bool,
    },
    Seq(Vec<Node>),
    /// Entries in file order; duplicate keys are kept so that they can be reported.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// Human name of the node's type, for "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar { .. } if self.is_null() => "null",
            NodeKind::Scalar { value, style, .. } => match (style, value.as_str()) {
                (Style::Plain, "true" | "false" | "True" | "False" | "TRUE" | "FALSE") => {
                    "a boolean"
                }
                (Style::Plain, v) if v.parse::<f64>().is_ok() => "a number",
                _ => "a string",
            },
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { value, style: Style::Plain, .. }
            if matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The scalar's text, if this is a scalar.
    pub fn as_scalar(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// Converts to JSON (for matrix values): plain scalars are typed, quoted ones are strings.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            NodeKind::Scalar { .. } if self.is_null() => Value::Null,
            NodeKind::Scalar { value, style, .. } => {
                if *style == Style::Plain {
                    match value.as_str() {
                        "true" | "True" | "TRUE" => return Value::Bool(true),
                        "false" | "False" | "FALSE" => return Value::Bool(false),
                        _ => {}
                    }
                    if let Ok(int) = value.parse::<i64>() {
                        return Value::from(int);
                    }
                    if let Ok(float) = value.parse::<f64>()
                        && let Some(number) = serde_json::Number::from_f64(float)
                    {
                        return Value::Number(number);
                    }
                }
                Value::String(value.clone())
            }
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.as_scalar().unwrap_or_default().to_owned(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Maximum nesting of collections; deeper documents are rejected rather than risking the stack.
const MAX_DEPTH: usize = 64;

/// Parses one YAML document. An empty file gives an empty mapping.
pub fn parse(text: &str, file: FileId) -> Result<Node, Diagnostic> {
    let mut builder = Builder {
        file,
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        documents: 0,
    };
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        match next {
            Ok((event, span)) => {
                if let Some(error) = builder.event(event, span) {
                    return Err(error);
                }
            }
            Err(error) => {
                let mut span = point(file, *error.marker());
                // Errors at the end of input point past the last line: show the last line instead.
                let lines: Vec<&str> = text.lines().collect();
                if span.line as usize > lines.len() && !lines.is_empty() {
                    span.line = lines.len() as u32;
                    span.col = lines[lines.len() - 1].chars().count() as u32 + 1;
                }
                return Err(
                    Diagnostic::error(span, format!("invalid YAML: {}", error.info()))
                        .with_hint("check quotes, brackets and indentation around here"),
                );
            }
        }
    }
    Ok(builder.root.unwrap_or(Node {
        span: Span {
            file,
            line: 1,
            col: 1,
            len: 0,
        },
        kind: NodeKind::Map(Vec::new()),
    }))
}

fn point(file: FileId, marker: Marker) -> Span {
    Span {
        file,
        line: marker.line() as u32,
        col: marker.col() as u32 + 1,
        len: 1,
    }
}

fn span_of(file: FileId, span: YamlSpan) -> Span {
    let len = if span.end.line() == span.start.line() {
        span.end.index().saturating_sub(span.start.index())
    } else {
        1
    };
    Span {
        len: len.max(1) as u32,
        ..point(file, span.start)
    }
}

enum Open {
    Seq(Span, usize, Vec<Node>),
    Map(Span, usize, Vec<(Node, Node)>, Option<Node>),
}

struct Builder {
    file: FileId,
    stack: Vec<Open>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    documents: usize,
}

impl Builder {
    fn event(&mut self, event: Event<'_>, span: YamlSpan) -> Option<Diagnostic> {
        match event {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Some(
                        Diagnostic::error(
                            span_of(self.file, span),
                            "a pipeline file holds one YAML document; found a second one",
                        )
                        .with_hint(
                            "remove the `---` line or move the second document into its own file",
                        ),
                    );
                }
                None
            }
            Event::Scalar(value, style, anchor, _tag) => {
                let at = span_of(self.file, span);
                let (style, exact) = match style {
                    ScalarStyle::Plain => (Style::Plain, span.start.line() == span.end.line()),
                    ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => (
                        Style::Quoted,
                        span.start.line() == span.end.line()
                            && value.chars().count() + 2 == at.len as usize,
                    ),
                    ScalarStyle::Literal | ScalarStyle::Folded => (Style::Block, false),
                };
                let node = Node {
                    span: at,
                    kind: NodeKind::Scalar {
                        value: value.into_owned(),
                        style,
                        exact,
                    },
                };
                self.finish_node(node, anchor)
            }
            Event::SequenceStart(anchor, _) => {
                self.open(Open::Seq(span_of(self.file, span), anchor, Vec::new()))
            }
            Event::MappingStart(anchor, _) => self.open(Open::Map(
                span_of(self.file, span),
                anchor,
                Vec::new(),
                None,
            )),
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Open::Seq(span, anchor, items)) => (
                        Node {
                            span,
                            kind: NodeKind::Seq(items),
                        },
                        anchor,
                    ),
                    Some(Open::Map(span, anchor, entries, _)) => (
                        Node {
                            span,
                            kind: NodeKind::Map(entries),
                        },
                        anchor,
                    ),
                    None => return None,
                };
                self.finish_node(node, anchor)
            }
            Event::Alias(id) => {
                let at = span_of(self.file, span);
                match self.anchors.get(&id) {
                    Some(node) => {
                        let node = node.clone();
                        self.finish_node(node, 0)
                    }
                    None => Some(Diagnostic::error(at, "alias to an unknown anchor")),
                }
            }
            _ => None,
        }
    }

    fn open(&mut self, open: Open) -> Option<Diagnostic> {
        if self.stack.len() >= MAX_DEPTH {
            let span = match open {
                Open::Seq(span, ..) | Open::Map(span, ..) => span,
            };
            return Some(Diagnostic::error(
                span,
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ));
        }
        self.stack.push(open);
        None
    }

    fn finish_node(&mut self, node: Node, anchor: usize) -> Option<Diagnostic> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Open::Seq(_, _, items)) => items.push(node),
            Some(Open::Map(_, _, entries, pending_key)) => match pending_key.take() {
                None => *pending_key = Some(node),
                Some(key) => {
                    if key.as_scalar() == Some("<<") {
                        merge_into(entries, node);
                    } else {
                        entries.push((key, node));
                    }
                }
            },
        }
        None
    }
}

/// `<<: *anchor` (or a list of anchors): entries not already present are added.
fn merge_into(entries: &mut Vec<(Node, Node)>, source: Node) {
    let sources = match source.kind {
        NodeKind::Seq(items) => items,
        _ => vec![source],
    };
    for source in sources {
        if let NodeKind::Map(merged) = source.kind {
            for (key, value) in merged {
                if !entries
                    .iter()
                    .any(|(k, _)| k.as_scalar() == key.as_scalar())
                {
                    entries.push((key, value));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_point_at_keys_and_values() {
        let node = parse("jobs:\n  build:\n    needs: [lint]\n", FileId(0)).unwrap();
        let NodeKind::Map(top) = &node.kind else {
            panic!()
        };
        let (key, jobs) = &top[0];
        assert_eq!((key.span.line, key.span.col, key.span.len), (1, 1, 4));
        let NodeKind::Map(jobs) = &jobs.kind else {
            panic!()
        };
        let NodeKind::Map(build) = &jobs[0].1.kind else {
            panic!()
        };
        let (needs, list) = &build[0];
        assert_eq!((needs.span.line, needs.span.col), (3, 5));
        let NodeKind::Seq(items) = &list.kind else {
            panic!()
        };
        assert_eq!(
            (items[0].span.line, items[0].span.col, items[0].span.len),
            (3, 13, 4)
        );
    }

    #[test]
    fn quoted_scalars_are_strings_and_merge_keys_merge() {
        let node = parse(
            "a: &x {p: 1, q: 2}\nb:\n  <<: *x\n  q: 3\nc: '1'\n",
            FileId(0),
        )
        .unwrap();
        let json = node.to_json();
        assert_eq!(json["b"], serde_json::json!({"q": 3, "p": 1}));
        assert_eq!(json["c"], serde_json::json!("1"));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let error = parse("jobs:\n  a: [1, 2\n", FileId(0)).unwrap_err();
        assert!(
            error.message.starts_with("invalid YAML"),
            "{}",
            error.message
        );
        assert!(error.span.line >= 2);
    }
}
