//! Recursive descent over the tokens; one function per grammar rule (see the crate doc).

use crate::ast::{Arg, BinOp, Expr, Lit, UnOp};
use crate::error::{Pos, RuleError};
use crate::lexer::{tokenize, Tok, Token};

/// Deeper nesting than this is refused rather than risking the stack.
const MAX_DEPTH: usize = 64;

pub fn parse(src: &str) -> Result<Expr, RuleError> {
    let tokens = tokenize(src)?;
    let mut p = Parser {
        src,
        tokens,
        i: 0,
        depth: 0,
    };
    if p.peek() == &Tok::End {
        return Err(p.error_here("expected an expression, found end of input".into()));
    }
    let e = p.expr()?;
    if p.peek() != &Tok::End {
        let found = p.peek().describe();
        return Err(p.error_here(format!(
            "expected an operator (`and`, `or`, `==`, ...) or end of input, found {found}"
        )));
    }
    Ok(e)
}

struct Parser<'s> {
    src: &'s str,
    tokens: Vec<Token>,
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        self.tokens.get(self.i).map_or(&Tok::End, |t| &t.tok)
    }

    fn peek_at(&self, n: usize) -> &Tok {
        self.tokens.get(self.i + n).map_or(&Tok::End, |t| &t.tok)
    }

    fn here(&self) -> usize {
        self.tokens
            .get(self.i)
            .or(self.tokens.last())
            .map_or(0, |t| t.at)
    }

    fn bump(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.i < self.tokens.len() {
            self.i += 1;
        }
        t
    }

    fn error_here(&self, message: String) -> RuleError {
        RuleError::Syntax {
            pos: Pos::of(self.src, self.here()),
            message,
        }
    }

    fn expect(&mut self, want: Tok, what: &str) -> Result<(), RuleError> {
        if *self.peek() == want {
            self.bump();
            Ok(())
        } else {
            let found = self.peek().describe();
            Err(self.error_here(format!("expected {what}, found {found}")))
        }
    }

    /// Runs one level of recursion, refusing nesting deeper than [`MAX_DEPTH`].
    fn nested<T>(&mut self, f: fn(&mut Self) -> Result<T, RuleError>) -> Result<T, RuleError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error_here(format!("expression nested deeper than {MAX_DEPTH}")));
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn expr(&mut self) -> Result<Expr, RuleError> {
        self.nested(Self::or_expr)
    }

    fn binary_chain(
        &mut self,
        ops: &[(Tok, BinOp)],
        next: fn(&mut Self) -> Result<Expr, RuleError>,
    ) -> Result<Expr, RuleError> {
        let mut left = next(self)?;
        while let Some((_, op)) = ops.iter().find(|(t, _)| t == self.peek()) {
            let op = *op;
            self.bump();
            let right = next(self)?;
            let at = left.at();
            left = Expr::Binary {
                op,
                left: Box::new(left),
                right: Box::new(right),
                at,
            };
        }
        Ok(left)
    }

    fn or_expr(&mut self) -> Result<Expr, RuleError> {
        self.binary_chain(&[(Tok::Or, BinOp::Or)], Self::and_expr)
    }

    fn and_expr(&mut self) -> Result<Expr, RuleError> {
        self.binary_chain(&[(Tok::And, BinOp::And)], Self::not_expr)
    }

    fn not_expr(&mut self) -> Result<Expr, RuleError> {
        if *self.peek() == Tok::Not {
            let at = self.here();
            self.bump();
            let inner = self.nested(Self::not_expr)?;
            return Ok(Expr::Unary {
                op: UnOp::Not,
                expr: Box::new(inner),
                at,
            });
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, RuleError> {
        let left = self.additive()?;
        let op = match self.peek() {
            Tok::Eq => BinOp::Eq,
            Tok::Ne => BinOp::Ne,
            Tok::Lt => BinOp::Lt,
            Tok::Le => BinOp::Le,
            Tok::Gt => BinOp::Gt,
            Tok::Ge => BinOp::Ge,
            Tok::In => BinOp::In,
            Tok::Not if *self.peek_at(1) == Tok::In => {
                self.bump();
                BinOp::NotIn
            }
            _ => return Ok(left),
        };
        self.bump();
        let right = self.additive()?;
        if matches!(
            self.peek(),
            Tok::Eq | Tok::Ne | Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge | Tok::In
        ) {
            return Err(self.error_here(
                "comparisons do not chain: use `and` (a < b and b < c) or parentheses".into(),
            ));
        }
        let at = left.at();
        Ok(Expr::Binary {
            op,
            left: Box::new(left),
            right: Box::new(right),
            at,
        })
    }

    fn additive(&mut self) -> Result<Expr, RuleError> {
        self.binary_chain(
            &[(Tok::Plus, BinOp::Add), (Tok::Minus, BinOp::Sub)],
            Self::multiplicative,
        )
    }

    fn multiplicative(&mut self) -> Result<Expr, RuleError> {
        self.binary_chain(
            &[(Tok::Star, BinOp::Mul), (Tok::Slash, BinOp::Div)],
            Self::unary,
        )
    }

    fn unary(&mut self) -> Result<Expr, RuleError> {
        if *self.peek() == Tok::Minus {
            let at = self.here();
            self.bump();
            let inner = self.nested(Self::unary)?;
            return Ok(Expr::Unary {
                op: UnOp::Neg,
                expr: Box::new(inner),
                at,
            });
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, RuleError> {
        let at = self.here();
        let lit = |lit| Ok(Expr::Lit { lit, at });
        match self.bump() {
            Tok::Num(n) => lit(Lit::Num(n)),
            Tok::Str(s) => lit(Lit::Str(s)),
            Tok::Dur(d) => lit(Lit::Dur(d)),
            Tok::True => lit(Lit::Bool(true)),
            Tok::False => lit(Lit::Bool(false)),
            Tok::Null => lit(Lit::Null),
            Tok::LParen => {
                let e = self.expr()?;
                self.expect(Tok::RParen, "`)`")?;
                Ok(e)
            }
            Tok::LBracket => {
                let mut items = Vec::new();
                if *self.peek() != Tok::RBracket {
                    loop {
                        items.push(self.expr()?);
                        if *self.peek() == Tok::Comma {
                            self.bump();
                            continue;
                        }
                        break;
                    }
                }
                self.expect(Tok::RBracket, "`,` or `]`")?;
                Ok(Expr::List { items, at })
            }
            Tok::Ident(name) => {
                if *self.peek() == Tok::LParen {
                    self.bump();
                    let args = self.arguments()?;
                    return Ok(Expr::Call { name, args, at });
                }
                let mut parts = vec![name];
                while *self.peek() == Tok::Dot {
                    self.bump();
                    match self.bump() {
                        Tok::Ident(s) | Tok::Str(s) => parts.push(s),
                        // Keywords are fine as property names: traits.in, event.properties.not
                        t @ (Tok::And
                        | Tok::Or
                        | Tok::Not
                        | Tok::In
                        | Tok::Where
                        | Tok::True
                        | Tok::False
                        | Tok::Null) => parts.push(t.describe().trim_matches('`').to_string()),
                        other => {
                            self.i -= 1;
                            return Err(self.error_here(format!(
                                "expected a name after `.`, found {}",
                                other.describe()
                            )));
                        }
                    }
                }
                Ok(Expr::Path { parts, at })
            }
            other => {
                self.i = self.i.saturating_sub(1);
                Err(self.error_here(format!(
                    "expected a value, a name, a function call or `(`, found {}",
                    other.describe()
                )))
            }
        }
    }

    fn arguments(&mut self) -> Result<Vec<Arg>, RuleError> {
        let mut args = Vec::new();
        if *self.peek() == Tok::RParen {
            self.bump();
            return Ok(args);
        }
        loop {
            let at = self.here();
            let name = match (self.peek(), self.peek_at(1)) {
                (Tok::Ident(n), Tok::Colon) => {
                    let n = n.clone();
                    self.bump();
                    self.bump();
                    Some(n)
                }
                _ => None,
            };
            let value = self.expr()?;
            let filter = if *self.peek() == Tok::Where {
                self.bump();
                Some(self.expr()?)
            } else {
                None
            };
            args.push(Arg {
                name,
                value,
                filter,
                at,
            });
            match self.peek() {
                Tok::Comma => {
                    self.bump();
                }
                Tok::RParen => {
                    self.bump();
                    return Ok(args);
                }
                other => {
                    let found = other.describe();
                    return Err(self.error_here(format!("expected `,` or `)`, found {found}")));
                }
            }
        }
    }
}
