//! A YAML stream (one or more `---`-separated documents) turned into a small tree whose nodes know
//! their 1-based line and column. Built on `saphyr-parser` events so that positions survive.
//!
//! Invariants: parsing never panics and never recurses on the input's nesting while building:
//! collections deeper than [`MAX_DEPTH`] and streams whose aliases would copy more than
//! [`MAX_ALIAS_NODES`] nodes are rejected with a positioned error instead of exhausting memory.
//! (Nodes written out in the text are bounded by the text's own size.)

use std::collections::HashMap;

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, Span};

/// Deepest collection nesting accepted. Kubernetes manifests stay far below this.
pub const MAX_DEPTH: usize = 128;

/// Most nodes the aliases of one stream may copy ("billion laughs" guard).
pub const MAX_ALIAS_NODES: usize = 100_000;

/// A YAML node with its position (1-based line and column of its first character).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub line: usize,
    pub column: usize,
    pub kind: NodeKind,
}

/// What a node holds.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A scalar; `plain` is false for quoted and block scalars, which are always strings.
    Scalar {
        value: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Entries in file order; duplicate keys are kept (lookups take the last one).
    Map(Vec<(Node, Node)>),
}

/// A YAML syntax error (or a resource limit hit) at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Node {
    /// The entries of a mapping; empty for anything else.
    pub fn entries(&self) -> &[(Node, Node)] {
        match &self.kind {
            NodeKind::Map(entries) => entries,
            _ => &[],
        }
    }

    /// The items of a sequence; empty for anything else.
    pub fn items(&self) -> &[Node] {
        match &self.kind {
            NodeKind::Seq(items) => items,
            _ => &[],
        }
    }

    pub fn is_map(&self) -> bool {
        matches!(self.kind, NodeKind::Map(_))
    }

    /// Whether this is a YAML null (`~`, `null`, or nothing at all).
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { value, plain: true }
            if matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The key node and value node of `key` in a mapping (the last one if the key repeats).
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        self.entries()
            .iter()
            .rev()
            .find(|(k, _)| k.scalar() == Some(key))
            .map(|(k, v)| (k, v))
    }

    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, value)| value)
    }

    /// The value at a path of mapping keys.
    pub fn path(&self, keys: &[&str]) -> Option<&Node> {
        keys.iter().try_fold(self, |node, key| node.get(key))
    }

    /// The text of a scalar (including quoted empty strings); `None` for nulls and collections.
    pub fn scalar(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } if !self.is_null() => Some(value),
            _ => None,
        }
    }

    /// A plain `true`/`false` scalar (any of YAML's spellings, including YAML 1.1's `yes`/`no`,
    /// which Kubernetes' YAML loader still accepts).
    pub fn bool(&self) -> Option<bool> {
        match &self.kind {
            NodeKind::Scalar { value, plain: true } => match value.as_str() {
                "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
                "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => {
                    Some(false)
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// A scalar that reads as a decimal integer.
    pub fn int(&self) -> Option<i64> {
        self.scalar()?.trim().parse().ok()
    }

    /// Number of nodes in this subtree.
    fn size(&self) -> usize {
        match &self.kind {
            NodeKind::Scalar { .. } => 1,
            NodeKind::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            NodeKind::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.size() + v.size())
                    .sum::<usize>()
            }
        }
    }
}

/// Parses every document of a YAML stream. Empty documents come back as null scalars; a stream
/// with no document at all gives an empty list.
pub fn parse_stream(text: &str) -> Result<Vec<Node>, YamlError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        match next {
            Ok((event, span)) => builder.event(event, span)?,
            Err(error) => {
                let (mut line, mut column) = position(*error.marker());
                // Errors at the end of input point past the last line: show the last line instead.
                let lines: Vec<&str> = text.lines().collect();
                if line > lines.len() && !lines.is_empty() {
                    line = lines.len();
                    column = lines[lines.len() - 1].chars().count() + 1;
                }
                return Err(YamlError {
                    line: line.max(1),
                    column,
                    message: format!("invalid YAML: {}", error.info()),
                });
            }
        }
    }
    Ok(builder.documents)
}

fn position(marker: Marker) -> (usize, usize) {
    (marker.line(), marker.col() + 1)
}

enum Open {
    Seq(Node, usize),
    Map(Node, usize, Option<Node>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    anchors: HashMap<usize, Node>,
    documents: Vec<Node>,
    /// Whether the current document's root node has been produced.
    root_done: bool,
    /// Nodes copied by aliases so far.
    alias_nodes: usize,
}

impl Builder {
    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), YamlError> {
        let (line, column) = position(span.start);
        let at = |kind| Node { line, column, kind };
        match event {
            Event::DocumentStart(_) => {
                self.stack.clear();
                self.anchors.clear();
                self.root_done = false;
                Ok(())
            }
            Event::DocumentEnd => {
                if !self.root_done {
                    self.documents.push(at(NodeKind::Scalar {
                        value: String::new(),
                        plain: true,
                    }));
                }
                Ok(())
            }
            Event::Scalar(value, style, anchor, _tag) => {
                let plain = matches!(style, ScalarStyle::Plain);
                let node = at(NodeKind::Scalar {
                    value: value.into_owned(),
                    plain,
                });
                self.finish(node, anchor);
                Ok(())
            }
            Event::SequenceStart(anchor, _) => {
                self.open(Open::Seq(at(NodeKind::Seq(Vec::new())), anchor))
            }
            Event::MappingStart(anchor, _) => {
                self.open(Open::Map(at(NodeKind::Map(Vec::new())), anchor, None))
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Open::Seq(node, anchor) | Open::Map(node, anchor, _)) => (node, anchor),
                    None => return Ok(()),
                };
                self.finish(node, anchor);
                Ok(())
            }
            Event::Alias(id) => {
                let Some(size) = self.anchors.get(&id).map(Node::size) else {
                    return Err(YamlError {
                        line,
                        column,
                        message: "alias to an unknown anchor".to_owned(),
                    });
                };
                // Count before cloning, so that an alias bomb stops before it allocates.
                self.count_alias(size, line, column)?;
                if let Some(node) = self.anchors.get(&id).cloned() {
                    self.finish(node, 0);
                }
                Ok(())
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd => Ok(()),
        }
    }

    fn count_alias(&mut self, added: usize, line: usize, column: usize) -> Result<(), YamlError> {
        self.alias_nodes = self.alias_nodes.saturating_add(added);
        if self.alias_nodes > MAX_ALIAS_NODES {
            return Err(YamlError {
                line,
                column,
                message: format!(
                    "aliases here expand to more than {MAX_ALIAS_NODES} nodes; refusing the file"
                ),
            });
        }
        Ok(())
    }

    fn open(&mut self, open: Open) -> Result<(), YamlError> {
        if self.stack.len() >= MAX_DEPTH {
            let (Open::Seq(node, _) | Open::Map(node, ..)) = open;
            return Err(YamlError {
                line: node.line,
                column: node.column,
                message: format!("collections nested deeper than {MAX_DEPTH} levels"),
            });
        }
        self.stack.push(open);
        Ok(())
    }

    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                self.documents.push(node);
                self.root_done = true;
            }
            Some(Open::Seq(seq, _)) => {
                if let NodeKind::Seq(items) = &mut seq.kind {
                    items.push(node);
                }
            }
            Some(Open::Map(map, _, pending_key)) => match pending_key.take() {
                None => *pending_key = Some(node),
                Some(key) => {
                    if let NodeKind::Map(entries) = &mut map.kind {
                        if key.scalar() == Some("<<")
                            && matches!(key.kind, NodeKind::Scalar { plain: true, .. })
                        {
                            merge_into(entries, node);
                        } else {
                            entries.push((key, node));
                        }
                    }
                }
            },
        }
    }
}

/// `<<: *anchor` (or a list of anchors): entries whose keys are not already present are added.
fn merge_into(entries: &mut Vec<(Node, Node)>, source: Node) {
    let sources = match source.kind {
        NodeKind::Seq(items) => items,
        _ => vec![source],
    };
    for source in sources {
        if let NodeKind::Map(merged) = source.kind {
            for (key, value) in merged {
                if !entries.iter().any(|(k, _)| k.scalar() == key.scalar()) {
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
    fn documents_keep_positions() {
        let docs = parse_stream("a: 1\n---\nb:\n  c: [x, y]\n").unwrap();
        assert_eq!(docs.len(), 2);
        let (key, value) = docs[1].get("b").unwrap().entry("c").unwrap();
        assert_eq!((key.line, key.column), (4, 3));
        assert_eq!((value.items()[1].line, value.items()[1].column), (4, 10));
    }

    #[test]
    fn empty_documents_are_null_and_scalars_type() {
        let docs = parse_stream("---\n---\nx: 'true'\ny: yes\nz: 12\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert!(docs[0].is_null());
        assert_eq!(docs[1].get("x").unwrap().bool(), None);
        assert_eq!(docs[1].get("y").unwrap().bool(), Some(true));
        assert_eq!(docs[1].get("z").unwrap().int(), Some(12));
    }

    #[test]
    fn merge_keys_and_aliases_resolve() {
        let docs = parse_stream("a: &x {p: 1}\nb:\n  <<: *x\n  q: 2\nc: *x\n").unwrap();
        assert_eq!(docs[0].path(&["b", "p"]).unwrap().int(), Some(1));
        assert_eq!(docs[0].path(&["c", "p"]).unwrap().int(), Some(1));
    }

    #[test]
    fn alias_bombs_and_deep_nesting_are_refused() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let error = parse_stream(&bomb).unwrap_err();
        assert!(error.message.contains("expand"), "{}", error.message);
        let deep = "[".repeat(10_000);
        let error = parse_stream(&deep).unwrap_err();
        assert_eq!(error.line, 1);
        let deep_flow_maps = "{a: ".repeat(10_000);
        assert!(parse_stream(&deep_flow_maps).is_err());
        let deep_block_maps: String = (0..2_000)
            .map(|i| format!("{}k:\n", " ".repeat(i)))
            .collect();
        let error = parse_stream(&deep_block_maps).unwrap_err();
        assert!(error.message.contains("deeper"), "{}", error.message);
        let deep_block_seqs = "- ".repeat(5_000) + "x\n";
        assert!(parse_stream(&deep_block_seqs).is_err());
    }

    #[test]
    fn syntax_errors_have_positions() {
        let error = parse_stream("a: 1\nb: [1, 2\n").unwrap_err();
        assert!(
            error.message.starts_with("invalid YAML"),
            "{}",
            error.message
        );
        assert!(error.line >= 2, "{error:?}");
    }
}
