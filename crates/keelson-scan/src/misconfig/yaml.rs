//! The positioned YAML tree shared by the Compose and Kubernetes scanners: a stream (one or more
//! `---`-separated documents) is read from `saphyr-parser` events into a small tree whose nodes
//! know the 1-based line and column of their first character, so that findings and errors can
//! point at the file. [`parse_stream`] returns every document (Kubernetes); [`parse`] reads only
//! the first one and ignores whatever follows it (Compose).
//!
//! What the tree resolves:
//! - Aliases are expanded into copies of their anchored node. The copy's root takes the alias's
//!   position (so a finding on `image: *img` points at that line); the nodes inside it keep the
//!   positions they have under the anchor. Anchors do not carry over from one document to the next.
//! - `<<` merge keys (a plain `<<` whose value is a mapping or a sequence of mappings) are applied
//!   when their mapping ends: merged entries whose keys the mapping does not have (anywhere in it)
//!   are appended after the mapping's own entries, earlier sources first, and the `<<` entries are
//!   removed. Merging never creates a duplicate key.
//! - Literal duplicate keys are kept in file order; [`Node::entry`] and [`Node::get`] take the
//!   last one.
//! - Scalars keep their text as written (quotes removed) and whether they were plain; no typing is
//!   applied to the tree, the accessors ([`Node::is_null`], [`Node::bool`], [`Node::is_true`],
//!   [`Node::int`], …) decide what a scalar means.
//!
//! Invariants: parsing never panics and never recurses on the input's nesting while building.
//! Hostile input is refused with a positioned [`YamlError`] instead of exhausting the stack or
//! memory: collections nested deeper than [`MAX_DEPTH`], a stream whose aliases would copy more
//! than [`MAX_ALIAS_NODES`] nodes in all (counted before copying, so an alias bomb stops before it
//! allocates), and a document of more than [`MAX_NODES`] nodes, written and copied together.
//! Syntax errors carry the parser's position, moved back onto the last line when the parser points
//! past the end of the text; lines and columns are always at least 1.

use std::collections::HashMap;

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, Span};

/// Deepest collection nesting accepted. Compose files and Kubernetes manifests stay far below this.
pub const MAX_DEPTH: usize = 128;

/// Most nodes one document may hold, those written out and those copied by aliases together.
pub const MAX_NODES: usize = 200_000;

/// Most nodes the aliases of one stream may copy ("billion laughs" guard).
pub const MAX_ALIAS_NODES: usize = 100_000;

/// A YAML node with its position (1-based line and column, in characters, of its first character).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// What the node holds.
    pub kind: NodeKind,
}

/// What a node holds.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A scalar as written (quotes removed); `plain` is false for quoted and block scalars, which
    /// are always strings.
    Scalar { value: String, plain: bool },
    /// A sequence's items in file order.
    Seq(Vec<Node>),
    /// A mapping's entries in file order; duplicate keys are kept (lookups take the last one).
    Map(Vec<(Node, Node)>),
}

/// A YAML syntax error (or a resource limit hit) at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What went wrong.
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

    /// Whether this is a mapping.
    pub fn is_map(&self) -> bool {
        matches!(self.kind, NodeKind::Map(_))
    }

    /// Whether this is a YAML null: a plain `~`, `null` (in its three spellings) or nothing at all.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { value, plain: true }
            if matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The key node and value node of `key` in a mapping (the last one if the key repeats). Keys
    /// are compared as scalar text, see [`Node::scalar`].
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

    /// The text of any scalar, nulls included (`~` gives `"~"`, an empty value `""`); `None` for
    /// collections.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// The text of a scalar that is not null (quoted empty strings included); `None` for nulls and
    /// collections.
    pub fn scalar(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } if !self.is_null() => Some(value),
            _ => None,
        }
    }

    /// A scalar reading `true` in any capitalisation, quoted or not (how Compose treats flags such
    /// as `privileged: "true"`).
    pub fn is_true(&self) -> bool {
        self.as_str()
            .is_some_and(|text| text.eq_ignore_ascii_case("true"))
    }

    /// A plain `true`/`false` scalar (any of YAML's spellings, including YAML 1.1's `yes`/`no`,
    /// which Kubernetes' YAML loader still accepts). Quoted scalars are strings: `None`.
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

/// Parses the first document of a YAML stream; `Ok(None)` when the stream holds no document (an
/// empty text, or only comments). Whatever follows the first document is not read, so errors
/// there are not reported.
///
/// # Errors
/// A [`YamlError`] for a syntax error or a resource limit hit within the first document.
pub fn parse(text: &str) -> Result<Option<Node>, YamlError> {
    Ok(read(text, true)?.into_iter().next())
}

/// Parses every document of a YAML stream. Empty documents come back as null scalars; a stream
/// with no document at all gives an empty list.
///
/// # Errors
/// A [`YamlError`] for a syntax error or a resource limit hit anywhere in the stream.
pub fn parse_stream(text: &str) -> Result<Vec<Node>, YamlError> {
    read(text, false)
}

fn read(text: &str, first_only: bool) -> Result<Vec<Node>, YamlError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        match next {
            Ok((event, span)) => {
                let document_end = matches!(event, Event::DocumentEnd);
                builder.event(event, span)?;
                if first_only && document_end && !builder.documents.is_empty() {
                    break;
                }
            }
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

/// A collection being built, with its anchor id (0 for none) and, for a mapping, the key waiting
/// for its value.
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
    /// Nodes of the current document so far, written and copied.
    document_nodes: usize,
    /// Nodes copied by aliases so far, whole stream.
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
                self.document_nodes = 0;
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
                self.count_nodes(1, line, column)?;
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
                let (mut node, anchor) = match self.stack.pop() {
                    Some(Open::Seq(node, anchor) | Open::Map(node, anchor, _)) => (node, anchor),
                    None => return Ok(()),
                };
                apply_merge_keys(&mut node);
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
                if let Some(mut node) = self.anchors.get(&id).cloned() {
                    node.line = line;
                    node.column = column;
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
                    "aliases here expand to more than {MAX_ALIAS_NODES} nodes (alias bomb?); \
                     refusing the file"
                ),
            });
        }
        self.count_nodes(added, line, column)
    }

    fn count_nodes(&mut self, added: usize, line: usize, column: usize) -> Result<(), YamlError> {
        self.document_nodes = self.document_nodes.saturating_add(added);
        if self.document_nodes > MAX_NODES {
            return Err(YamlError {
                line,
                column,
                message: format!(
                    "document expands to more than {MAX_NODES} nodes (alias bomb?); refusing the \
                     file"
                ),
            });
        }
        Ok(())
    }

    fn open(&mut self, open: Open) -> Result<(), YamlError> {
        let (Open::Seq(node, _) | Open::Map(node, ..)) = &open;
        let (line, column) = (node.line, node.column);
        if self.stack.len() >= MAX_DEPTH {
            return Err(YamlError {
                line,
                column,
                message: format!("collection nesting deeper than {MAX_DEPTH} levels"),
            });
        }
        self.count_nodes(1, line, column)?;
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
                        entries.push((key, node));
                    }
                }
            },
        }
    }
}

/// Applies `<<: *base` / `<<: [*a, *b]` merge keys to a finished mapping: entries of the merged
/// mappings whose keys the mapping does not already have are appended; the `<<` entries are
/// removed. Anything else is left alone.
fn apply_merge_keys(node: &mut Node) {
    let NodeKind::Map(entries) = &mut node.kind else {
        return;
    };
    let is_merge =
        |key: &Node| matches!(&key.kind, NodeKind::Scalar { value, plain: true } if value == "<<");
    if !entries.iter().any(|(key, _)| is_merge(key)) {
        return;
    }
    let (merges, mut own): (Vec<_>, Vec<_>) = std::mem::take(entries)
        .into_iter()
        .partition(|(key, _)| is_merge(key));
    for (_, merged) in merges {
        let sources = match merged.kind {
            NodeKind::Map(_) => vec![merged],
            NodeKind::Seq(items) => items,
            NodeKind::Scalar { .. } => Vec::new(),
        };
        for source in sources {
            if let NodeKind::Map(source_entries) = source.kind {
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

    // Ported from the Compose scanner's YAML module.

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

    // Ported from the Kubernetes scanner's YAML module.

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

    // The unified behaviour where the two old modules could differ.

    #[test]
    fn parse_reads_only_the_first_document() {
        let doc = parse("a: 1\n---\nb: [unclosed\n").unwrap().unwrap();
        assert_eq!(doc.get("a").and_then(Node::int), Some(1));
        assert!(parse_stream("a: 1\n---\nb: [unclosed\n").is_err());
        let null = parse("---\n---\nb: 2\n").unwrap().unwrap();
        assert!(null.is_null());
    }

    #[test]
    fn merged_entries_never_override_or_duplicate_own_keys() {
        let doc = parse_stream("base: &b {p: 1, r: 3}\nm:\n  <<: *b\n  p: 2\n")
            .unwrap()
            .remove(0);
        let m = doc.get("m").unwrap();
        let keys: Vec<_> = m.entries().iter().filter_map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["p", "r"]);
        assert_eq!(m.get("p").and_then(Node::int), Some(2));
        let many = parse("a: &a {x: 1}\nb: &b {x: 2, y: 2}\nm:\n  <<: [*a, *b]\n")
            .unwrap()
            .unwrap();
        let m = many.get("m").unwrap();
        assert_eq!(m.get("x").and_then(Node::int), Some(1));
        assert_eq!(m.get("y").and_then(Node::int), Some(2));
        // A quoted "<<" is an ordinary key.
        let quoted = parse("m:\n  '<<': {x: 1}\n").unwrap().unwrap();
        assert!(quoted.path(&["m", "<<", "x"]).is_some());
    }

    #[test]
    fn alias_copies_take_the_alias_position_inside_keeps_the_anchor() {
        let doc = parse("a: &x {p: 1}\nb:\n  c: *x\n").unwrap().unwrap();
        let c = doc.path(&["b", "c"]).unwrap();
        assert_eq!((c.line, c.column), (3, 6));
        let (p, _) = c.entry("p").unwrap();
        assert_eq!((p.line, p.column), (1, 8));
    }

    #[test]
    fn scalar_accessors_differ_on_nulls_and_quotes() {
        let doc = parse("n: ~\ne:\nq: ''\nt: 'TRUE'\nd: [1]\nk: x\nk: y\n")
            .unwrap()
            .unwrap();
        let n = doc.get("n").unwrap();
        assert!(n.is_null());
        assert_eq!((n.as_str(), n.scalar()), (Some("~"), None));
        assert_eq!(doc.get("e").unwrap().as_str(), Some(""));
        assert_eq!(doc.get("q").unwrap().scalar(), Some(""));
        let t = doc.get("t").unwrap();
        assert!(t.is_true());
        assert_eq!(t.bool(), None);
        assert_eq!(doc.get("d").unwrap().as_str(), None);
        assert!(!doc.get("d").unwrap().is_true());
        assert_eq!(doc.get("k").and_then(Node::as_str), Some("y"));
        assert!(doc.is_map() && !n.is_map());
    }

    #[test]
    fn written_nodes_are_bounded_per_document() {
        let big = "- x\n".repeat(MAX_NODES + 1);
        let error = parse(&big).unwrap_err();
        assert!(error.message.contains("more than"), "{}", error.message);
        assert!(error.line > 1, "{error:?}");
        let split = format!("{}---\n{}", "- x\n".repeat(10), "- x\n".repeat(10));
        assert_eq!(parse_stream(&split).unwrap().len(), 2);
    }
}
