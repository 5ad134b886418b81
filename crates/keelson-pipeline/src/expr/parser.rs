//! Recursive-descent parser from tokens to the syntax tree, with a nesting limit.
//!
//! Precedence, loosest first: `||`, `&&`, `== !=`, `< <= > >=`, `!`, then `.prop`, `[index]`
//! and calls, then literals, names and `( )`.

use serde_json::Value;

use super::ExprError;
use super::ast::{CmpOp, Kind, Node, Step, StepKind};
use super::functions::Func;
use super::lexer::{Lexer, Tok, Token, error, excerpt};
use super::value::number_value;

/// How deeply parentheses, `!`, call arguments and indexes may nest.
pub const MAX_DEPTH: usize = 100;

/// Parses a whole expression.
pub(super) fn parse_chars(chars: &[char]) -> Result<Node, ExprError> {
    if chars.iter().all(|c| c.is_whitespace()) {
        return Err(error(0, chars.len(), "empty expression"));
    }
    let mut lexer = Lexer::new(chars);
    let cur = lexer.next_token()?;
    let mut parser = Parser {
        chars,
        lexer,
        cur,
        prev: (0, 0),
        depth: 0,
    };
    let node = parser.parse_expr()?;
    if parser.cur.tok != Tok::Eof {
        let hint = if parser.cur.tok == Tok::LParen {
            Some("only functions can be called, e.g. `contains(…)`")
        } else {
            starts_expression(&parser.cur.tok)
                .then_some("expected an operator such as `&&`, `||` or `==` before it")
        };
        return Err(parser.unexpected(hint));
    }
    Ok(node)
}

fn starts_expression(tok: &Tok) -> bool {
    matches!(
        tok,
        Tok::Num(_) | Tok::Str(_) | Tok::Ident(_) | Tok::LParen | Tok::Bang
    )
}

fn comparison(tok: &Tok) -> Option<CmpOp> {
    match tok {
        Tok::Lt => Some(CmpOp::Lt),
        Tok::Le => Some(CmpOp::Le),
        Tok::Gt => Some(CmpOp::Gt),
        Tok::Ge => Some(CmpOp::Ge),
        _ => None,
    }
}

fn equality(tok: &Tok) -> Option<CmpOp> {
    match tok {
        Tok::EqEq => Some(CmpOp::Eq),
        Tok::Ne => Some(CmpOp::Ne),
        _ => None,
    }
}

/// A node spanning from `first` to `last`.
fn spanning(kind: Kind, offset: usize, end: usize) -> Node {
    Node {
        kind,
        offset,
        len: end.saturating_sub(offset),
    }
}

struct Parser<'c> {
    chars: &'c [char],
    lexer: Lexer<'c>,
    /// The current (not yet consumed) token.
    cur: Token,
    /// Offset and length of the token consumed last.
    prev: (usize, usize),
    depth: usize,
}

type Parsed = Result<Node, ExprError>;

impl Parser<'_> {
    /// Consumes the current token and returns it.
    fn take(&mut self) -> Result<Token, ExprError> {
        let next = self.lexer.next_token()?;
        self.prev = (self.cur.offset, self.cur.len);
        Ok(std::mem::replace(&mut self.cur, next))
    }

    /// "unexpected `x`" at the current token.
    fn unexpected(&self, hint: Option<&str>) -> ExprError {
        let message = if self.cur.tok == Tok::Eof {
            "unexpected end of expression".to_owned()
        } else {
            format!(
                "unexpected `{}`",
                excerpt(self.chars, self.cur.offset, self.cur.len)
            )
        };
        ExprError {
            hint: hint.map(str::to_owned),
            ..error(self.cur.offset, self.cur.len, message)
        }
    }

    /// An error at the current token, or at `fallback` when the text ended.
    fn error_here_or(&self, fallback: &Token, message: String, hint: Option<&str>) -> ExprError {
        let (offset, len) = if self.cur.tok == Tok::Eof {
            (fallback.offset, fallback.len)
        } else {
            (self.cur.offset, self.cur.len)
        };
        ExprError {
            hint: hint.map(str::to_owned),
            ..error(offset, len, message)
        }
    }

    /// Parses an operand with `parse` after the operator `op` (already consumed).
    fn operand_after(&mut self, op: &Token, parse: fn(&mut Self) -> Parsed) -> Parsed {
        if !starts_expression(&self.cur.tok) {
            let text = excerpt(self.chars, op.offset, op.len);
            return Err(self.error_here_or(
                op,
                format!("expected an expression after `{text}`"),
                None,
            ));
        }
        parse(self)
    }

    /// Enters one more nesting level (opened by the token consumed last).
    fn enter(&mut self) -> Result<(), ExprError> {
        if self.depth > MAX_DEPTH {
            return Err(ExprError {
                hint: Some("split it into simpler expressions".to_owned()),
                ..error(
                    self.prev.0,
                    self.prev.1,
                    format!("expression nested too deeply (more than {MAX_DEPTH} levels)"),
                )
            });
        }
        self.depth += 1;
        Ok(())
    }

    /// A full expression (one nesting level).
    fn parse_expr(&mut self) -> Parsed {
        self.enter()?;
        let node = self.parse_or();
        self.depth -= 1;
        node
    }

    fn parse_or(&mut self) -> Parsed {
        let first = self.parse_and()?;
        if self.cur.tok != Tok::OrOr {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.cur.tok == Tok::OrOr {
            let op = self.take()?;
            items.push(self.operand_after(&op, Self::parse_and)?);
        }
        Ok(list(items, Kind::Or))
    }

    fn parse_and(&mut self) -> Parsed {
        let first = self.parse_equality()?;
        if self.cur.tok != Tok::AndAnd {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.cur.tok == Tok::AndAnd {
            let op = self.take()?;
            items.push(self.operand_after(&op, Self::parse_equality)?);
        }
        Ok(list(items, Kind::And))
    }

    fn parse_equality(&mut self) -> Parsed {
        self.parse_chain(equality, Self::parse_comparison)
    }

    fn parse_comparison(&mut self) -> Parsed {
        self.parse_chain(comparison, Self::parse_unary)
    }

    /// `operand (op operand)*` for the operators `op_of` recognises.
    fn parse_chain(
        &mut self,
        op_of: fn(&Tok) -> Option<CmpOp>,
        operand: fn(&mut Self) -> Parsed,
    ) -> Parsed {
        let first = operand(self)?;
        if op_of(&self.cur.tok).is_none() {
            return Ok(first);
        }
        let offset = first.offset;
        let mut end = first.end();
        let mut rest = Vec::new();
        while let Some(op) = op_of(&self.cur.tok) {
            let token = self.take()?;
            let right = self.operand_after(&token, operand)?;
            end = right.end();
            rest.push((op, right));
        }
        Ok(spanning(
            Kind::Compare {
                first: Box::new(first),
                rest,
            },
            offset,
            end,
        ))
    }

    fn parse_unary(&mut self) -> Parsed {
        if self.cur.tok != Tok::Bang {
            return self.parse_postfix();
        }
        let bang = self.take()?;
        self.enter()?;
        let inner = self.operand_after(&bang, Self::parse_unary);
        self.depth -= 1;
        let inner = inner?;
        let end = inner.end();
        Ok(spanning(Kind::Not(Box::new(inner)), bang.offset, end))
    }

    fn parse_postfix(&mut self) -> Parsed {
        let base = self.parse_primary()?;
        let mut steps = Vec::new();
        loop {
            match self.cur.tok {
                Tok::Dot => {
                    let dot = self.take()?;
                    let kind = match &mut self.cur.tok {
                        Tok::Ident(name) => StepKind::Prop(std::mem::take(name)),
                        Tok::Star => StepKind::Filter,
                        _ => {
                            return Err(self.error_here_or(
                                &dot,
                                "expected a property name after `.`".to_owned(),
                                None,
                            ));
                        }
                    };
                    let name = self.take()?;
                    steps.push(Step {
                        kind,
                        offset: dot.offset,
                        end: name.end(),
                    });
                }
                Tok::LBracket => {
                    let open = self.take()?;
                    let kind = if self.cur.tok == Tok::Star {
                        self.take()?;
                        StepKind::Filter
                    } else {
                        StepKind::Index(self.operand_after(&open, Self::parse_expr)?)
                    };
                    if self.cur.tok != Tok::RBracket {
                        return Err(self.unclosed(&open, "`]`"));
                    }
                    let close = self.take()?;
                    steps.push(Step {
                        kind,
                        offset: open.offset,
                        end: close.end(),
                    });
                }
                _ => break,
            }
        }
        match steps.last() {
            None => Ok(base),
            Some(last) => {
                let (offset, end) = (base.offset, last.end);
                Ok(spanning(
                    Kind::Access {
                        base: Box::new(base),
                        steps,
                    },
                    offset,
                    end,
                ))
            }
        }
    }

    /// The error when `open` is not followed by its closing `close`.
    fn unclosed(&self, open: &Token, close: &str) -> ExprError {
        let open_text = excerpt(self.chars, open.offset, open.len);
        if self.cur.tok == Tok::Eof {
            ExprError {
                hint: Some(format!("add {close}")),
                ..error(open.offset, open.len, format!("unclosed `{open_text}`"))
            }
        } else {
            self.unexpected(Some(&format!(
                "expected {close} to close the `{open_text}`"
            )))
        }
    }

    fn parse_primary(&mut self) -> Parsed {
        let kind = match &mut self.cur.tok {
            Tok::Num(n) => Kind::Lit(number_value(*n)),
            Tok::Str(text) => Kind::Lit(Value::String(std::mem::take(text))),
            Tok::Ident(name) => match name.as_str() {
                "null" => Kind::Lit(Value::Null),
                "true" => Kind::Lit(Value::Bool(true)),
                "false" => Kind::Lit(Value::Bool(false)),
                _ => {
                    let name = std::mem::take(name);
                    let token = self.take()?;
                    return if self.cur.tok == Tok::LParen {
                        self.parse_call(name, token)
                    } else {
                        Ok(spanning(Kind::Context(name), token.offset, token.end()))
                    };
                }
            },
            Tok::LParen => {
                let open = self.take()?;
                let mut inner = self.operand_after(&open, Self::parse_expr)?;
                if self.cur.tok != Tok::RParen {
                    return Err(self.unclosed(&open, "`)`"));
                }
                let close = self.take()?;
                inner.offset = open.offset;
                inner.len = close.end() - open.offset;
                return Ok(inner);
            }
            _ => return Err(self.unexpected(None)),
        };
        let token = self.take()?;
        Ok(spanning(kind, token.offset, token.end()))
    }

    /// `name(args…)`; the current token is the `(`.
    fn parse_call(&mut self, name: String, name_token: Token) -> Parsed {
        let open = self.take()?;
        let mut args = Vec::new();
        if self.cur.tok != Tok::RParen {
            let mut separator = open.clone();
            loop {
                args.push(self.operand_after(&separator, Self::parse_expr)?);
                match self.cur.tok {
                    Tok::Comma => separator = self.take()?,
                    Tok::RParen => break,
                    _ => return Err(self.unclosed(&open, "`,` or `)`")),
                }
            }
        }
        let close = self.take()?;
        let func = Func::lookup(&name);
        Ok(spanning(
            Kind::Call {
                name,
                name_len: name_token.len,
                func,
                args,
            },
            name_token.offset,
            close.end(),
        ))
    }
}

/// An `&&`/`||` node over `items` (at least one).
fn list(items: Vec<Node>, kind: fn(Vec<Node>) -> Kind) -> Node {
    let offset = items.first().map_or(0, |n| n.offset);
    let end = items.last().map_or(0, Node::end);
    spanning(kind(items), offset, end)
}
