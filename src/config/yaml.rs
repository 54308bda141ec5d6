//! The one place that parses YAML configuration.
//!
//! The parser's events are turned into a small tree in which every node keeps its position and,
//! for scalars, how it was written (plain or quoted). That is what precise, all-at-once
//! diagnostics need and what a `serde` derive cannot give: the line and column of every key and
//! value, duplicate keys, and whether `token: 12345` was an unquoted number.
//!
//! Aliases are refused at the event level, so an "alias bomb" is rejected at its first alias
//! instead of being expanded.
//!
//! Nesting is capped at [`MAX_DEPTH`]: yaml-rust2's own loader (`Parser::load`) recurses once per
//! level, and so would `Drop` and `Clone` of a deep tree, so a 60 KB file of nested `- ` would
//! overflow the stack. The events are pulled one by one here instead, and the first collection
//! deeper than the cap stops the parse with a finding.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn from_marker(m: Marker) -> Self {
        Pos {
            line: m.line(),
            column: m.col() + 1,
        }
    }
}

/// How a scalar was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Plain,
    Quoted,
    Block,
}

/// A YAML node with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub kind: NodeKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    Scalar {
        value: String,
        style: Style,
        /// The explicit tag, if any (`!!str` is `tag:yaml.org,2002:str`).
        tag: Option<String>,
    },
    Mapping(Vec<(Node, Node)>),
    Sequence(Vec<Node>),
}

/// What a plain scalar means under the YAML 1.2 core schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolved {
    Null,
    Bool,
    Int,
    Float,
    Str,
}

impl Node {
    /// Resolves a scalar as YAML would read it; collections are `None`.
    pub fn resolved(&self) -> Option<Resolved> {
        match &self.kind {
            NodeKind::Scalar { value, style, tag } => Some(match (style, tag.as_deref()) {
                (_, Some("tag:yaml.org,2002:str")) => Resolved::Str,
                (Style::Plain, _) => resolve_plain(value),
                _ => Resolved::Str,
            }),
            _ => None,
        }
    }

    /// A word for what this node is, for "expected a string, found ..." messages.
    pub fn describe(&self) -> &'static str {
        match (&self.kind, self.resolved()) {
            (NodeKind::Mapping(_), _) => "a mapping",
            (NodeKind::Sequence(_), _) => "a list",
            (_, Some(Resolved::Null)) => "an empty value",
            (_, Some(Resolved::Bool)) => "a boolean",
            (_, Some(Resolved::Int)) => "a number",
            (_, Some(Resolved::Float)) => "a number",
            _ => "a string",
        }
    }
}

fn resolve_plain(v: &str) -> Resolved {
    match v {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "true" | "True" | "TRUE" | "false" | "False" | "FALSE" => return Resolved::Bool,
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => return Resolved::Float,
        _ => {}
    }
    let unsigned = v.strip_prefix(['-', '+']).unwrap_or(v);
    let digits = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
    if digits(unsigned, 10)
        || v.strip_prefix("0o").is_some_and(|s| digits(s, 8))
        || v.strip_prefix("0x").is_some_and(|s| digits(s, 16))
    {
        return Resolved::Int;
    }
    // [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            (int.is_empty() && digits(frac, 10))
                || (digits(int, 10) && (frac.is_empty() || digits(frac, 10)))
        }
        None => digits(mantissa, 10),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e), 10));
    if mantissa_ok && exponent_ok {
        Resolved::Float
    } else {
        Resolved::Str
    }
}

/// Why a text is not one usable YAML document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum YamlError {
    /// The parser's own message (lower-cased) and where it stopped.
    Syntax { message: String, pos: Pos },
    /// A second `---` document; the position is the start of it.
    MultipleDocuments { pos: Pos },
    /// An alias (`*name`), which configuration files have no use for.
    Alias { pos: Pos },
    /// A collection nested deeper than [`MAX_DEPTH`]; the position is the first one too deep.
    TooDeep { pos: Pos },
}

/// The deepest nesting of mappings and lists accepted. A configuration file needs one level; the
/// cap only has to keep the tree shallow enough for recursive `Drop`, `Clone` and `Debug`.
pub const MAX_DEPTH: usize = 64;

/// Parses one YAML document. `Ok(None)` means the text holds no document (empty, or comments).
pub fn parse(text: &str) -> Result<Option<Node>, YamlError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    // Not `Parser::load`: it recurses once per nesting level (see the module docs).
    loop {
        let (event, mark) = match parser.next_token() {
            Ok(next) => next,
            Err(e) => {
                let mut message = e.info().to_string();
                if let Some(first) = message.get_mut(0..1) {
                    first.make_ascii_lowercase();
                }
                return Err(YamlError::Syntax {
                    message,
                    pos: Pos::from_marker(*e.marker()),
                });
            }
        };
        let end = event == Event::StreamEnd;
        builder.on_event(event, mark);
        if let Some(err) = builder.error.take() {
            return Err(err);
        }
        if end {
            return Ok(builder.document);
        }
    }
}

/// Builds the tree from parser events with an explicit stack (no recursion, so deep nesting
/// cannot overflow the stack).
#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    document: Option<Node>,
    documents: usize,
    error: Option<YamlError>,
}

enum Open {
    Mapping {
        pos: Pos,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
    Sequence {
        pos: Pos,
        items: Vec<Node>,
    },
}

impl Builder {
    fn finish(&mut self, node: Node) {
        match self.stack.last_mut() {
            Some(Open::Mapping { entries, key, .. }) => match key.take() {
                Some(k) => entries.push((k, node)),
                None => *key = Some(node),
            },
            Some(Open::Sequence { items, .. }) => items.push(node),
            None => self.document = Some(node),
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let pos = Pos::from_marker(mark);
        match ev {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.error = Some(YamlError::MultipleDocuments { pos });
                }
            }
            Event::Alias(_) => self.error = Some(YamlError::Alias { pos }),
            Event::Scalar(value, style, _, tag) => {
                let style = match style {
                    TScalarStyle::Plain => Style::Plain,
                    TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => Style::Quoted,
                    TScalarStyle::Literal | TScalarStyle::Folded => Style::Block,
                };
                let tag = tag.map(|t| {
                    if t.handle == "!!" {
                        format!("tag:yaml.org,2002:{}", t.suffix)
                    } else {
                        format!("{}{}", t.handle, t.suffix)
                    }
                });
                self.finish(Node {
                    pos,
                    kind: NodeKind::Scalar { value, style, tag },
                });
            }
            Event::MappingStart(..) | Event::SequenceStart(..) if self.stack.len() >= MAX_DEPTH => {
                self.error = Some(YamlError::TooDeep { pos });
            }
            Event::MappingStart(..) => self.stack.push(Open::Mapping {
                pos,
                entries: Vec::new(),
                key: None,
            }),
            Event::SequenceStart(..) => self.stack.push(Open::Sequence {
                pos,
                items: Vec::new(),
            }),
            Event::MappingEnd | Event::SequenceEnd => {
                let node = match self.stack.pop() {
                    Some(Open::Mapping { pos, entries, .. }) => Node {
                        pos,
                        kind: NodeKind::Mapping(entries),
                    },
                    Some(Open::Sequence { pos, items }) => Node {
                        pos,
                        kind: NodeKind::Sequence(items),
                    },
                    None => return,
                };
                self.finish(node);
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(n: &Node) -> (&str, Style) {
        match &n.kind {
            NodeKind::Scalar { value, style, .. } => (value, *style),
            _ => panic!("not a scalar"),
        }
    }

    #[test]
    fn keeps_positions_and_styles() {
        let doc = parse("repo: x\nbranch: \"main\"\n").unwrap().unwrap();
        let NodeKind::Mapping(entries) = &doc.kind else {
            panic!()
        };
        assert_eq!(entries[1].0.pos, Pos { line: 2, column: 1 });
        assert_eq!(entries[1].1.pos, Pos { line: 2, column: 9 });
        assert_eq!(scalar(&entries[1].1), ("main", Style::Quoted));
    }

    #[test]
    fn empty_and_comment_only_texts_have_no_document() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("# nothing\n").unwrap(), None);
    }

    #[test]
    fn second_document_and_aliases_are_refused() {
        assert!(matches!(
            parse("a: 1\n---\nb: 2\n"),
            Err(YamlError::MultipleDocuments {
                pos: Pos { line: 2, .. }
            })
        ));
        assert!(matches!(
            parse("a: &x [1]\nb: *x\n"),
            Err(YamlError::Alias { .. })
        ));
    }

    /// Regression: `x:` and 30,000 nested `- ` overflowed the stack in yaml-rust2's loader.
    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        for text in [
            format!("x:\n{}", "- ".repeat(30_000)),
            (1..100).map(|i| format!("{}a:\n", " ".repeat(i))).collect(),
            format!("x: {}", "{a: ".repeat(200)),
        ] {
            assert!(
                matches!(parse(&text), Err(YamlError::TooDeep { .. })),
                "{}",
                &text[..20]
            );
        }
        // Deep flow collections stop in the scanner first, which has a limit of its own.
        assert!(matches!(
            parse(&format!("x: {}", "[".repeat(30_000))),
            Err(YamlError::Syntax { .. })
        ));
        let at_cap = format!("x:\n{}1\n", "- ".repeat(MAX_DEPTH - 1));
        assert!(parse(&at_cap).is_ok());
        let over = format!("x:\n{}1\n", "- ".repeat(MAX_DEPTH));
        assert_eq!(
            parse(&over),
            Err(YamlError::TooDeep {
                pos: Pos {
                    line: 2,
                    column: 2 * MAX_DEPTH - 1
                }
            })
        );
    }

    #[test]
    fn plain_scalars_resolve_like_yaml_1_2() {
        for (v, r) in [
            ("123", Resolved::Int),
            ("0x1F", Resolved::Int),
            ("1e10", Resolved::Float),
            ("1.5", Resolved::Float),
            (".5", Resolved::Float),
            ("true", Resolved::Bool),
            ("~", Resolved::Null),
            ("ghp_123", Resolved::Str),
            ("1.2.3", Resolved::Str),
            ("yes", Resolved::Str),
            ("e5", Resolved::Str),
        ] {
            assert_eq!(resolve_plain(v), r, "{v}");
        }
    }
}
