//! A YAML document tree with positions, built from `saphyr-parser` events: every node knows its
//! 1-based line and column. Aliases are expanded and `<<` merge keys applied, as Compose does.
//!
//! Invariants: never panics; nesting deeper than [`MAX_DEPTH`] and alias expansion beyond
//! [`MAX_NODES`] nodes are errors (so hostile files cannot exhaust the stack or memory); only the
//! first document of a stream is read.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// Deepest nesting of sequences and mappings accepted.
pub const MAX_DEPTH: usize = 128;
/// Most nodes a document may expand to (aliases included).
pub const MAX_NODES: usize = 200_000;

/// A node and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
}

/// A node's content.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar as written (quotes removed); `plain` is false for quoted and block scalars.
    Scalar {
        text: String,
        plain: bool,
    },
    Sequence(Vec<Node>),
    /// Entries in file order.
    Mapping(Vec<(Node, Node)>),
}

impl Node {
    /// The scalar text, for any scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A plain `null`, `~` or empty scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true } if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// `true` in any capitalisation, quoted or not.
    pub fn is_true(&self) -> bool {
        self.as_str()
            .is_some_and(|text| text.eq_ignore_ascii_case("true"))
    }

    /// The entry whose key is the scalar `key`: (key node, value node).
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.value {
            Value::Mapping(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    /// The value of the entry whose key is `key`.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, value)| value)
    }

    /// The mapping's entries (empty for other nodes).
    pub fn entries(&self) -> &[(Node, Node)] {
        match &self.value {
            Value::Mapping(entries) => entries,
            _ => &[],
        }
    }

    /// The sequence's items (empty for other nodes).
    pub fn items(&self) -> &[Node] {
        match &self.value {
            Value::Sequence(items) => items,
            _ => &[],
        }
    }

    fn count(&self) -> usize {
        1 + match &self.value {
            Value::Scalar { .. } => 0,
            Value::Sequence(items) => items.iter().map(Node::count).sum(),
            Value::Mapping(entries) => entries.iter().map(|(k, v)| k.count() + v.count()).sum(),
        }
    }
}

/// A YAML error with a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

enum Open {
    Sequence {
        node: Node,
        anchor: usize,
    },
    Mapping {
        node: Node,
        anchor: usize,
        pending_key: Option<Node>,
    },
}

/// Parses the first document of `text`; `Ok(None)` for an empty stream.
pub fn parse(text: &str) -> Result<Option<Node>, YamlError> {
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut stack: Vec<Open> = Vec::new();
    let mut nodes = 0usize;
    let mut document: Option<Node> = None;
    let position = |span: &Span| (span.start.line(), span.start.col() + 1);

    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|error| YamlError {
            line: error.marker().line(),
            column: error.marker().col() + 1,
            message: error.info().to_owned(),
        })?;
        let (line, column) = position(&span);
        let complete = match event {
            Event::DocumentEnd if document.is_some() => break,
            Event::Scalar(text, style, anchor, _tag) => {
                let node = Node {
                    value: Value::Scalar {
                        text: text.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    },
                    line,
                    column,
                };
                nodes += 1;
                if anchor > 0 {
                    anchors.insert(anchor, node.clone());
                }
                Some(node)
            }
            Event::Alias(anchor) => {
                let Some(target) = anchors.get(&anchor) else {
                    return Err(YamlError {
                        line,
                        column,
                        message: "alias to an unknown anchor".to_owned(),
                    });
                };
                nodes += target.count();
                let mut node = target.clone();
                node.line = line;
                node.column = column;
                Some(node)
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(YamlError {
                        line,
                        column,
                        message: format!("nesting deeper than {MAX_DEPTH} levels"),
                    });
                }
                nodes += 1;
                let is_sequence = matches!(event, Event::SequenceStart(..));
                let node = Node {
                    value: if is_sequence {
                        Value::Sequence(Vec::new())
                    } else {
                        Value::Mapping(Vec::new())
                    },
                    line,
                    column,
                };
                stack.push(if is_sequence {
                    Open::Sequence { node, anchor }
                } else {
                    Open::Mapping {
                        node,
                        anchor,
                        pending_key: None,
                    }
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (mut node, anchor) = match stack.pop() {
                    Some(Open::Sequence { node, anchor }) => (node, anchor),
                    Some(Open::Mapping { node, anchor, .. }) => (node, anchor),
                    None => continue,
                };
                apply_merge_keys(&mut node);
                if anchor > 0 {
                    anchors.insert(anchor, node.clone());
                }
                Some(node)
            }
            _ => None,
        };
        if nodes > MAX_NODES {
            return Err(YamlError {
                line,
                column,
                message: format!("document expands to more than {MAX_NODES} nodes (alias bomb?)"),
            });
        }
        let Some(node) = complete else {
            continue;
        };
        match stack.last_mut() {
            None => {
                if document.is_none() {
                    document = Some(node);
                }
            }
            Some(Open::Sequence { node: parent, .. }) => {
                if let Value::Sequence(items) = &mut parent.value {
                    items.push(node);
                }
            }
            Some(Open::Mapping {
                node: parent,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => *pending_key = Some(node),
                Some(key) => {
                    if let Value::Mapping(entries) = &mut parent.value {
                        entries.push((key, node));
                    }
                }
            },
        }
    }
    Ok(document)
}

/// Applies `<<: *base` / `<<: [*a, *b]` merge keys: entries of the merged mappings whose keys
/// the mapping does not already have are appended; the `<<` entries are removed.
fn apply_merge_keys(node: &mut Node) {
    let Value::Mapping(entries) = &mut node.value else {
        return;
    };
    let is_merge =
        |key: &Node| matches!(&key.value, Value::Scalar { text, plain: true } if text == "<<");
    if !entries.iter().any(|(key, _)| is_merge(key)) {
        return;
    }
    let (merges, mut own): (Vec<_>, Vec<_>) = std::mem::take(entries)
        .into_iter()
        .partition(|(key, _)| is_merge(key));
    for (_, merged) in merges {
        let sources: Vec<Node> = match merged.value {
            Value::Mapping(_) => vec![merged],
            Value::Sequence(items) => items,
            Value::Scalar { .. } => Vec::new(),
        };
        for source in sources {
            if let Value::Mapping(source_entries) = source.value {
                for (key, value) in source_entries {
                    let present = own
                        .iter()
                        .any(|(k, _)| k.as_str().is_some() && k.as_str() == key.as_str());
                    if !present {
                        own.push((key, value));
                    }
                }
            }
        }
    }
    *entries = own;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let doc = parse("a:\n  b: [1, 'x']\n").unwrap().unwrap();
        let (key, value) = doc.entry("a").unwrap();
        assert_eq!((key.line, key.column), (1, 1));
        let b = value.get("b").unwrap();
        assert_eq!((b.line, b.column), (2, 6));
        assert_eq!(b.items()[1].as_str(), Some("x"));
        assert_eq!((b.items()[1].line, b.items()[1].column), (2, 10));
    }

    #[test]
    fn aliases_and_merge_keys() {
        let doc = parse("base: &b\n  user: app\n  read_only: true\nsvc:\n  <<: *b\n  user: root\n")
            .unwrap()
            .unwrap();
        let svc = doc.get("svc").unwrap();
        assert_eq!(svc.get("user").unwrap().as_str(), Some("root"));
        assert!(svc.get("read_only").unwrap().is_true());
        assert!(svc.get("<<").is_none());
    }

    #[test]
    fn errors_and_limits() {
        let error = parse("a: [1, 2\nb: c\n").unwrap_err();
        assert!(error.line >= 1 && error.column >= 1, "{error:?}");
        let deep = "[".repeat(MAX_DEPTH + 5);
        assert!(parse(&deep).unwrap_err().message.contains("nesting"));
        let bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n";
        assert!(parse(bomb).unwrap_err().message.contains("alias bomb"));
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("# only a comment\n").unwrap(), None);
    }
}
