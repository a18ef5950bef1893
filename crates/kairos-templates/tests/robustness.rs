//! Templates come from users through an API: no input may panic the engine, and every render
//! must finish within its limits.
#![allow(clippy::unwrap_used)]

use kairos_templates::{Limits, Partials, RenderOptions, Template};
use proptest::prelude::*;
use serde_json::{json, Value};

fn partials() -> Partials {
    let mut p = Partials::new();
    p.insert_source("a", "{{ x | upcase }}{% include 'a' %}")
        .unwrap();
    p.insert_source(
        "b",
        "{% for i in (1..3) %}{{ i }}{% break %}{% endfor %}{% render 'b' %}",
    )
    .unwrap();
    p.insert_source("c", "{% cycle 1, 2 %}{{ forloop.index }}{% increment n %}")
        .unwrap();
    p
}

fn context() -> Value {
    json!({
        "x": "text", "n": 3, "f": -2.5, "big": 9_223_372_036_854_775_807i64, "t": true,
        "arr": [1, "two", null, [3, [4]], { "k": "v" }, 1.5e300],
        "obj": { "k": "v", "n": { "deep": [1, 2] }, "size": 7 },
        "s": "a,b,,c", "empty": "", "neg": -9_223_372_036_854_775_807i64
    })
}

fn check(source: &str, partials: &Partials) {
    let limits = Limits {
        max_steps: 20_000,
        max_output_bytes: 64 * 1024,
        max_collection_len: 10_000,
        max_partial_depth: 8,
    };
    let options = RenderOptions {
        partials: Some(partials),
        limits,
    };
    if let Ok(template) = Template::parse(source) {
        let _ = template.render_with(&context(), &options);
        let _ = template.render_with(&json!({}), &options);
    }
}

#[test]
fn every_prefix_of_every_golden_template() {
    let suite: Value = serde_json::from_str(include_str!("golden/golden_liquid.json")).unwrap();
    let partials = partials();
    for case in suite["tests"].as_array().unwrap() {
        let source = case["template"].as_str().unwrap();
        for (i, _) in source.char_indices() {
            check(&source[..i], &partials);
            check(&source[i..], &partials);
        }
    }
}

const FRAGMENTS: &[&str] = &[
    "{{",
    "}}",
    "{%",
    "%}",
    "{{-",
    "-}}",
    "{%-",
    "-%}",
    " ",
    "\n",
    "x",
    "arr",
    "obj",
    "obj.n.deep",
    "arr[0]",
    "arr[-1]",
    "[",
    "]",
    ".",
    "..",
    "(",
    ")",
    "(1..5)",
    "(n..big)",
    "'q'",
    "\"w\"",
    "1",
    "-3",
    "2.5",
    "|",
    ":",
    ",",
    "==",
    "!=",
    "<",
    ">=",
    "contains",
    "and",
    "or",
    "nil",
    "empty",
    "blank",
    "true",
    "if",
    "elsif",
    "else",
    "endif",
    "unless",
    "endunless",
    "case",
    "when",
    "endcase",
    "for",
    "in",
    "endfor",
    "limit:",
    "offset:",
    "continue",
    "reversed",
    "break",
    "tablerow",
    "endtablerow",
    "cols:",
    "assign",
    "=",
    "capture",
    "endcapture",
    "cycle",
    "increment",
    "decrement",
    "raw",
    "endraw",
    "comment",
    "endcomment",
    "doc",
    "enddoc",
    "#",
    "liquid",
    "echo",
    "include 'a'",
    "render 'b'",
    "include 'c' for arr",
    "ifchanged",
    "endifchanged",
    "upcase",
    "append",
    "split",
    "join",
    "map",
    "where",
    "sort",
    "sort_natural",
    "uniq",
    "first",
    "last",
    "size",
    "slice",
    "truncate",
    "truncatewords",
    "date",
    "'%Y %s %99N %^B'",
    "plus",
    "times",
    "divided_by",
    "modulo",
    "round",
    "default",
    "allow_false:",
    "replace",
    "remove",
    "concat",
    "sum",
    "compact",
    "reverse",
    "base64_decode",
    "url_decode",
    "escape_once",
    "strip_html",
    "newline_to_br",
    "at_least",
    "abs",
    "ceil",
    "é",
    "\u{1F600}",
];

fn fragment_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..40).prop_map(|parts| parts.join(""))
}

fn structured() -> impl Strategy<Value = String> {
    let expr = prop::sample::select(
        &[
            "x", "arr", "obj", "n", "f", "big", "s", "(1..n)", "'str'", "3", "nil",
        ][..],
    );
    let filter = prop::sample::select(
        &[
            "",
            "| upcase",
            "| split: ','",
            "| join: '-'",
            "| plus: big",
            "| times: f",
            "| divided_by: 0",
            "| modulo: f",
            "| round: 2",
            "| sort",
            "| map: 'k'",
            "| where: 'k'",
            "| first",
            "| size",
            "| slice: -1, 2",
            "| date: '%c'",
            "| default: 'd'",
            "| concat: arr",
            "| sum",
            "| uniq",
        ][..],
    );
    let node = (expr, filter, 0..6usize).prop_map(|(e, f, kind)| match kind {
        0 => format!("{{{{ {e} {f} }}}}"),
        1 => format!("{{% assign v = {e} {f} %}}{{{{ v }}}}"),
        2 => format!(
            "{{% for i in {e} limit: 3 %}}{{{{ forloop.index }}}}{{{{ i {f} }}}}{{% endfor %}}"
        ),
        3 => format!("{{% if {e} > 1 or {e} contains 'a' %}}y{{% else %}}n{{% endif %}}"),
        4 => format!("{{% tablerow i in {e} cols: 2 %}}{{{{ i }}}}{{% endtablerow %}}"),
        _ => format!("{{% case {e} %}}{{% when 1, 'str' %}}one{{% else %}}other{{% endcase %}}"),
    });
    prop::collection::vec(node, 0..8).prop_map(|n| n.join(""))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn liquid_soup_never_panics(source in fragment_soup()) {
        check(&source, &partials());
    }

    #[test]
    fn structured_templates_never_panic(source in structured()) {
        check(&source, &partials());
    }

    #[test]
    fn arbitrary_text_never_panics(source in "\\PC{0,80}") {
        check(&source, &partials());
    }
}
