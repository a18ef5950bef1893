//! The two small sentence forms built around expressions: score rules and tier ladders.
//!
//! ```text
//! score_rule = "when" expr "then" ( "+" | "-" ) NUMBER [ cap ] ;
//! cap        = "at" "most" NUMBER ( "time" | "times" ) "per" DURATION ;
//! tiers      = IDENT { "<" NUMBER "<=" IDENT } ;        (cold < 30 <= warm < 70 <= hot)
//! ```
//!
//! The `then` that ends the condition is the last `then` outside parentheses and brackets,
//! so a trait or property named `then` still works inside the condition.

use crate::error::{Pos, RuleError};
use crate::lexer::{tokenize, Tok, Token};

/// `at most N times per D`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap {
    pub times: u32,
    pub per_ms: i64,
}

/// A score rule split into its parts. `condition` keeps the rule's layout (everything
/// outside the condition blanked), so compile errors point into the original text.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreRuleParts {
    pub condition: String,
    pub points: f64,
    pub cap: Option<Cap>,
}

/// One rung of a tier ladder: the tier holds values `>= from` (the lowest has no bound).
#[derive(Clone, Debug, PartialEq)]
pub struct TierBound {
    pub name: String,
    pub from: Option<f64>,
}

fn syntax(src: &str, at: usize, message: impl Into<String>) -> RuleError {
    RuleError::Syntax {
        pos: Pos::of(src, at),
        message: message.into(),
    }
}

fn is_word(t: &Token, w: &str) -> bool {
    matches!(&t.tok, Tok::Ident(s) if s == w)
}

struct Cursor<'a> {
    src: &'a str,
    toks: &'a [Token],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> &Token {
        // The lexer always ends with an End token.
        &self.toks[self.i.min(self.toks.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        self.i += 1;
        t
    }

    fn word(&mut self, w: &str) -> Result<(), RuleError> {
        let t = self.next();
        if is_word(&t, w) {
            Ok(())
        } else {
            Err(syntax(
                self.src,
                t.at,
                format!("expected `{w}`, found {}", t.tok.describe()),
            ))
        }
    }

    fn number(&mut self, what: &str) -> Result<f64, RuleError> {
        let t = self.next();
        match t.tok {
            Tok::Num(n) => Ok(n),
            other => Err(syntax(
                self.src,
                t.at,
                format!("expected {what}, found {}", other.describe()),
            )),
        }
    }

    fn end(&mut self) -> Result<(), RuleError> {
        let t = self.next();
        if t.tok == Tok::End {
            Ok(())
        } else {
            Err(syntax(
                self.src,
                t.at,
                format!("expected end of rule, found {}", t.tok.describe()),
            ))
        }
    }
}

/// Splits `when <expr> then +<points> [at most <n> times per <duration>]`.
pub fn parse_score_rule(src: &str) -> Result<ScoreRuleParts, RuleError> {
    let toks = tokenize(src)?;
    let first = toks.first().ok_or_else(|| syntax(src, 0, "empty rule"))?;
    if !is_word(first, "when") {
        return Err(syntax(
            src,
            first.at,
            format!(
                "expected `when`, found {} (a score rule reads `when <condition> then +5`)",
                first.tok.describe()
            ),
        ));
    }
    let mut depth = 0i32;
    let mut then_at = None;
    for (i, t) in toks.iter().enumerate() {
        match t.tok {
            Tok::LParen | Tok::LBracket => depth += 1,
            Tok::RParen | Tok::RBracket => depth -= 1,
            _ if depth == 0 && i > 0 && is_word(t, "then") => then_at = Some(i),
            _ => {}
        }
    }
    let then_i = then_at.ok_or_else(|| {
        syntax(
            src,
            src.len(),
            "expected `then +<points>` after the condition",
        )
    })?;
    let cond_start = toks.get(1).map_or(src.len(), |t| t.at);
    let cond_end = toks[then_i].at;
    if then_i == 1 {
        return Err(syntax(src, cond_end, "expected a condition after `when`"));
    }
    // Blank everything but the condition, keeping line breaks, so positions stay true.
    let condition: String = src
        .char_indices()
        .map(|(i, c)| {
            if (cond_start..cond_end).contains(&i) || c == '\n' {
                c
            } else {
                ' '
            }
        })
        .collect();

    let mut cur = Cursor {
        src,
        toks: &toks,
        i: then_i + 1,
    };
    let sign_tok = cur.next();
    let sign = match sign_tok.tok {
        Tok::Plus => 1.0,
        Tok::Minus => -1.0,
        other => {
            return Err(syntax(
                src,
                sign_tok.at,
                format!(
                    "expected `+` or `-` and the points, found {}",
                    other.describe()
                ),
            ))
        }
    };
    let points = sign * cur.number("the points")?;
    let mut cap = None;
    if is_word(cur.peek(), "at") {
        cur.next();
        cur.word("most")?;
        let at = cur.peek().at;
        let n = cur.number("how many times")?;
        if n < 1.0 || n.fract() != 0.0 || n > u32::MAX as f64 {
            return Err(syntax(
                src,
                at,
                "the cap must be a whole number of at least 1",
            ));
        }
        let t = cur.next();
        if !(is_word(&t, "times") || is_word(&t, "time")) {
            return Err(syntax(
                src,
                t.at,
                format!("expected `times`, found {}", t.tok.describe()),
            ));
        }
        cur.word("per")?;
        let t = cur.next();
        let per_ms = match t.tok {
            Tok::Dur(d) if d > 0 => d,
            other => {
                return Err(syntax(
                    src,
                    t.at,
                    format!("expected a duration such as 1d, found {}", other.describe()),
                ))
            }
        };
        cap = Some(Cap {
            times: n as u32,
            per_ms,
        });
    }
    cur.end()?;
    Ok(ScoreRuleParts {
        condition,
        points,
        cap,
    })
}

/// Parses a single duration such as `14d` or `1.5h` into milliseconds.
pub fn parse_duration(src: &str) -> Result<i64, RuleError> {
    let toks = tokenize(src)?;
    match toks.as_slice() {
        [Token {
            tok: Tok::Dur(d), ..
        }, Token { tok: Tok::End, .. }]
            if *d > 0 =>
        {
            Ok(*d)
        }
        [t, ..] => Err(syntax(
            src,
            t.at,
            format!(
                "expected a positive duration such as 14d, found {}",
                t.tok.describe()
            ),
        )),
        [] => Err(syntax(src, 0, "expected a duration")),
    }
}

/// Parses a tier ladder such as `cold < 30 <= warm < 70 <= hot`.
pub fn parse_tiers(src: &str) -> Result<Vec<TierBound>, RuleError> {
    let toks = tokenize(src)?;
    let mut cur = Cursor {
        src,
        toks: &toks,
        i: 0,
    };
    let name = |cur: &mut Cursor| -> Result<String, RuleError> {
        let t = cur.next();
        match t.tok {
            Tok::Ident(s) => Ok(s),
            Tok::Str(s) => Ok(s),
            other => Err(syntax(
                src,
                t.at,
                format!("expected a tier name, found {}", other.describe()),
            )),
        }
    };
    let mut out = vec![TierBound {
        name: name(&mut cur)?,
        from: None,
    }];
    loop {
        let t = cur.next();
        match t.tok {
            Tok::End => break,
            Tok::Lt => {}
            other => {
                return Err(syntax(
                    src,
                    t.at,
                    format!("expected `<` or the end, found {}", other.describe()),
                ))
            }
        }
        let at = cur.peek().at;
        let bound = match cur.next().tok {
            Tok::Num(n) => n,
            Tok::Minus => -cur.number("a threshold")?,
            other => {
                return Err(syntax(
                    src,
                    at,
                    format!("expected a threshold, found {}", other.describe()),
                ))
            }
        };
        if let Some(prev) = out.last().and_then(|b| b.from) {
            if bound <= prev {
                return Err(syntax(
                    src,
                    at,
                    "thresholds must increase from left to right",
                ));
            }
        }
        let t = cur.next();
        if t.tok != Tok::Le {
            return Err(syntax(
                src,
                t.at,
                format!("expected `<=`, found {}", t.tok.describe()),
            ));
        }
        let at = cur.peek().at;
        let n = name(&mut cur)?;
        if out.iter().any(|b| b.name == n) {
            return Err(syntax(src, at, format!("tier `{n}` appears twice")));
        }
        out.push(TierBound {
            name: n,
            from: Some(bound),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_capped_rule() {
        let r =
            parse_score_rule(r#"when event.name == "Email Opened" then +5 at most 3 times per 1d"#)
                .expect("parses");
        assert_eq!(r.points, 5.0);
        assert_eq!(
            r.cap,
            Some(Cap {
                times: 3,
                per_ms: 86_400_000
            })
        );
        assert_eq!(r.condition.trim(), r#"event.name == "Email Opened""#);
        assert_eq!(r.condition.find("event"), Some(5));
    }

    #[test]
    fn negative_points_and_nested_then() {
        let r = parse_score_rule("when traits.then == 1 then -2.5").expect("parses");
        assert_eq!(r.points, -2.5);
        assert_eq!(r.cap, None);
        assert_eq!(r.condition.trim(), "traits.then == 1");
    }

    #[test]
    fn errors_point_at_the_mistake() {
        let e = parse_score_rule("when orders > 1 then 5").expect_err("must fail");
        assert_eq!(
            e.to_string(),
            "1:22: expected `+` or `-` and the points, found number 5"
        );
        let e = parse_score_rule("orders > 1 then +5").expect_err("must fail");
        assert!(e.to_string().starts_with("1:1: expected `when`"), "{e}");
        let e = parse_score_rule("when orders > 1").expect_err("must fail");
        assert!(e.to_string().contains("expected `then"), "{e}");
        let e = parse_score_rule("when orders > 1 then +5 at most 0 times per 1d")
            .expect_err("must fail");
        assert!(e.to_string().contains("at least 1"), "{e}");
        let e = parse_score_rule("when orders > 1 then +5 at most 2 times per day")
            .expect_err("must fail");
        assert!(e.to_string().contains("expected a duration"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("14d"), Ok(14 * 86_400_000));
        assert_eq!(parse_duration(" 90m "), Ok(90 * 60_000));
        assert!(parse_duration("14").is_err());
        assert!(parse_duration("14d 2h").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn tier_ladders() {
        let t = parse_tiers("cold < 30 <= warm < 70 <= hot").expect("parses");
        assert_eq!(
            t,
            vec![
                TierBound {
                    name: "cold".into(),
                    from: None
                },
                TierBound {
                    name: "warm".into(),
                    from: Some(30.0)
                },
                TierBound {
                    name: "hot".into(),
                    from: Some(70.0)
                },
            ]
        );
        assert!(parse_tiers("a < 5 <= b < 5 <= c").is_err());
        assert!(parse_tiers("a < 5 <= a").is_err());
        assert!(parse_tiers("a <= 5 < b").is_err());
        assert_eq!(
            parse_tiers("low < -1 <= mid").expect("parses")[1].from,
            Some(-1.0)
        );
    }
}
