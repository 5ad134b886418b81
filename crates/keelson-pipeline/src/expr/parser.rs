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

/// How deeply parentheses, `!`, call arguments and indexes may nest (GitHub allows 50 too).
pub const MAX_DEPTH: usize = 50;

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

/// A binary operator.
#[derive(Clone, Copy)]
enum BinOp {
    Or,
    And,
    Cmp(CmpOp),
}

impl BinOp {
    /// Precedence: higher binds tighter.
    fn level(self) -> u8 {
        match self {
            BinOp::Or => 0,
            BinOp::And => 1,
            BinOp::Cmp(CmpOp::Eq | CmpOp::Ne) => 2,
            BinOp::Cmp(_) => 3,
        }
    }
}

fn binary(tok: &Tok) -> Option<BinOp> {
    Some(match tok {
        Tok::OrOr => BinOp::Or,
        Tok::AndAnd => BinOp::And,
        Tok::EqEq => BinOp::Cmp(CmpOp::Eq),
        Tok::Ne => BinOp::Cmp(CmpOp::Ne),
        Tok::Lt => BinOp::Cmp(CmpOp::Lt),
        Tok::Le => BinOp::Cmp(CmpOp::Le),
        Tok::Gt => BinOp::Cmp(CmpOp::Gt),
        Tok::Ge => BinOp::Cmp(CmpOp::Ge),
        _ => return None,
    })
}

/// Applies the top operator to the top two operands. A left operand of the same kind is
/// extended rather than nested (`&&`/`||` are associative; comparisons fold from the left), so
/// long chains stay flat.
fn reduce(operands: &mut Vec<Node>, ops: &mut Vec<BinOp>) {
    let (Some(op), Some(right)) = (ops.pop(), operands.pop()) else {
        return;
    };
    let Some(left) = operands.pop() else {
        operands.push(right);
        return;
    };
    let (offset, end) = (left.offset, right.end());
    let kind = match (op, left.kind) {
        (BinOp::Or, Kind::Or(mut items)) => {
            items.push(right);
            Kind::Or(items)
        }
        (BinOp::And, Kind::And(mut items)) => {
            items.push(right);
            Kind::And(items)
        }
        (BinOp::Cmp(op), Kind::Compare { first, mut rest }) => {
            rest.push((op, right));
            Kind::Compare { first, rest }
        }
        (op, kind) => {
            let left = Node { kind, ..left };
            match op {
                BinOp::Or => Kind::Or(vec![left, right]),
                BinOp::And => Kind::And(vec![left, right]),
                BinOp::Cmp(op) => Kind::Compare {
                    first: Box::new(left),
                    rest: vec![(op, right)],
                },
            }
        }
    };
    operands.push(spanning(kind, offset, end));
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
        let node = self.parse_binary();
        self.depth -= 1;
        node
    }

    /// Operands joined by binary operators, with an operator stack rather than one function per
    /// precedence level (fewer stack frames per nesting level).
    fn parse_binary(&mut self) -> Parsed {
        let first = self.parse_unary()?;
        if binary(&self.cur.tok).is_none() {
            return Ok(first);
        }
        self.parse_operators(first)
    }

    /// The rest of [`Parser::parse_binary`] once an operator follows `first`.
    fn parse_operators(&mut self, first: Node) -> Parsed {
        let mut operands = vec![first];
        let mut ops: Vec<BinOp> = Vec::new();
        while let Some(op) = binary(&self.cur.tok) {
            let token = self.take()?;
            while ops.last().is_some_and(|top| top.level() >= op.level()) {
                reduce(&mut operands, &mut ops);
            }
            ops.push(op);
            operands.push(self.operand_after(&token, Self::parse_unary)?);
        }
        while !ops.is_empty() {
            reduce(&mut operands, &mut ops);
        }
        operands
            .pop()
            .ok_or_else(|| error(self.cur.offset, self.cur.len, "missing operand"))
    }

    fn parse_unary(&mut self) -> Parsed {
        if self.cur.tok == Tok::Bang {
            self.parse_not()
        } else {
            self.parse_postfix()
        }
    }

    /// `!…` (a loop, not recursion; every `!` still counts as a nesting level).
    fn parse_not(&mut self) -> Parsed {
        let mut bangs = Vec::new();
        while self.cur.tok == Tok::Bang {
            let bang = self.take()?;
            self.enter()?;
            if !starts_expression(&self.cur.tok) {
                return Err(self.error_here_or(
                    &bang,
                    "expected an expression after `!`".to_owned(),
                    None,
                ));
            }
            bangs.push(bang.offset);
        }
        let inner = self.parse_postfix();
        self.depth -= bangs.len();
        let mut node = inner?;
        for offset in bangs.into_iter().rev() {
            let end = node.end();
            node = spanning(Kind::Not(Box::new(node)), offset, end);
        }
        Ok(node)
    }

    fn parse_postfix(&mut self) -> Parsed {
        let base = self.parse_primary()?;
        if matches!(self.cur.tok, Tok::Dot | Tok::LBracket) {
            self.parse_steps(base)
        } else {
            Ok(base)
        }
    }

    /// `.prop`, `.*`, `[index]` and `[*]` after `base`.
    fn parse_steps(&mut self, base: Node) -> Parsed {
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
        match self.cur.tok {
            Tok::LParen => self.parse_group(),
            Tok::Ident(_) => self.parse_name(),
            _ => self.parse_literal(),
        }
    }

    /// `( expr )`; the node's span includes the parentheses.
    fn parse_group(&mut self) -> Parsed {
        let open = self.take()?;
        let mut inner = self.operand_after(&open, Self::parse_expr)?;
        if self.cur.tok != Tok::RParen {
            return Err(self.unclosed(&open, "`)`"));
        }
        let close = self.take()?;
        inner.offset = open.offset;
        inner.len = close.end() - open.offset;
        Ok(inner)
    }

    /// A keyword literal, a context name or a function call.
    fn parse_name(&mut self) -> Parsed {
        let name = match &mut self.cur.tok {
            Tok::Ident(name) if !matches!(name.as_str(), "null" | "true" | "false") => {
                std::mem::take(name)
            }
            _ => return self.parse_literal(),
        };
        let token = self.take()?;
        if self.cur.tok == Tok::LParen {
            self.parse_call(name, token)
        } else {
            Ok(spanning(Kind::Context(name), token.offset, token.end()))
        }
    }

    fn parse_literal(&mut self) -> Parsed {
        let value = match &mut self.cur.tok {
            Tok::Num(n) => number_value(*n),
            Tok::Str(text) => Value::String(std::mem::take(text)),
            Tok::Ident(name) if name == "null" => Value::Null,
            Tok::Ident(name) if name == "true" => Value::Bool(true),
            Tok::Ident(name) if name == "false" => Value::Bool(false),
            _ => return Err(self.unexpected(None)),
        };
        let token = self.take()?;
        Ok(spanning(Kind::Lit(value), token.offset, token.end()))
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
