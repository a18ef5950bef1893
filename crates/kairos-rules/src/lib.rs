//! The Kairos rule language: one small expression language for segment conditions, score
//! rules, campaign triggers and exits, and model features.
//!
//! This crate owns the syntax, the type checker and the compiled evaluator. It is pure and
//! depends on nothing of Kairos: the host (the core's profile state) answers questions through
//! the [`Env`] trait and declares what may be named through a [`Schema`]. It must never
//! depend on the store, the server or any runtime crate.
//!
//! # Grammar (EBNF)
//!
//! ```text
//! rule        = expr ;
//! expr        = or_expr ;
//! or_expr     = and_expr { "or" and_expr } ;
//! and_expr    = not_expr { "and" not_expr } ;
//! not_expr    = "not" not_expr | comparison ;
//! comparison  = additive [ ( "==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in" ) additive ] ;
//! additive    = multiplicative { ( "+" | "-" ) multiplicative } ;
//! multiplicative = unary { ( "*" | "/" ) unary } ;
//! unary       = "-" unary | primary ;
//! primary     = NUMBER | STRING | DURATION | "true" | "false" | "null"
//!             | "[" [ expr { "," expr } ] "]"
//!             | IDENT "(" [ argument { "," argument } ] ")"
//!             | path
//!             | "(" expr ")" ;
//! path        = IDENT { "." ( IDENT | STRING | keyword ) } ;
//! argument    = IDENT ":" expr | expr [ "where" expr ] ;
//!
//! NUMBER      = digit { digit | "_" } [ "." digit { digit } ] [ ( "e" | "E" ) [ "+" | "-" ] digit { digit } ] ;
//! DURATION    = NUMBER ( "ms" | "s" | "m" | "h" | "d" | "w" ) ;      (no space: 15m, 1.5h, 30d)
//! STRING      = '"' { char | "\" char } '"' | "'" { char | "\" char } "'" ;
//! IDENT       = ( letter | "_" ) { letter | digit | "_" } ;
//! comment     = "#" { any character but newline } ;
//! ```
//!
//! Score rules and tier ladders wrap expressions in two small sentence forms, see
//! [`definition`]: `when <expr> then +5 at most 3 times per 1d`, `cold < 30 <= warm < 70 <= hot`.
//!
//! Comparisons do not chain (`a < b < c` is an error). `and` binds tighter than `or`.
//!
//! # Names
//!
//! - `traits.<name>[.<name>...]`: a trait (JSON; its type is known at run time).
//! - Built-in fields, see [`Field`]: `orders`, `lifetime_revenue`, `last_seen`, ...
//! - `score.<name>` (number) and `tier.<name>` (string) of a defined score.
//! - `event.name`, `event.type`, `event.timestamp`, `event.properties.<name>`: the incoming
//!   event, in rules evaluated on one (score rules, triggers), not in segments.
//!
//! # Functions
//!
//! - `count(EVENT [where FILTER], within: DURATION, since: EVENT)`: number of events.
//! - `did(...)`: `count(...) >= 1`.
//! - `sum(EVENT [where FILTER], "property", within:, since:)`: sum of a numeric property.
//! - `last(EVENT [where FILTER])`, `first(...)`: time of the newest / oldest such event.
//! - `in_segment("name")`, `subscribed(["list"])` (default `marketing`), `consented("purpose")`.
//! - `exists(x)`: x is not null. `lower`, `upper`, `contains`, `starts_with`, `ends_with`,
//!   `abs`, `min`, `max`.
//!
//! `EVENT` is the event name as a string literal. In a `where` filter, bare names are the
//! event's properties (`count("Product Viewed" where category == "shoes", within: 7d)`).
//! `since: "Added to Cart"` counts only events after the newest "Added to Cart"; when that
//! event never happened, the whole window counts. In campaign exit and wait-until rules,
//! `since: trigger` counts only events after the instant the person entered the campaign
//! (`exit if did("Order Completed", since: trigger)`). A time compared with a duration compares
//! its age: `last_seen < 15m` means "seen in the last 15 minutes".
//!
//! # Semantics
//!
//! See [`eval`]: missing is `null`, `null` never compares (except with `== null`), different
//! kinds are never equal, only `true` is true. How exact windows are is up to the host (the
//! core documents its bucket resolution).

pub mod ast;
pub mod compile;
pub mod definition;
pub mod error;
pub mod eval;
pub mod lexer;
pub mod parser;
pub mod schema;

pub use compile::{
    compile, compile_value, AggId, AggSpec, Aggregates, Filter, Program, Reads, Window,
};
pub use definition::{
    parse_duration, parse_score_rule, parse_tiers, Cap, ScoreRuleParts, TierBound,
};
pub use error::{Pos, RuleError, Warning};
pub use eval::{lookup, lookup_in, Env, EventGuard, EventRef, Threshold, Val, WindowTest};
pub use parser::parse;
pub use schema::{Field, Schema, ScoreInfo, Type};
