//! Shopify semantics the campaign engine relies on: lax undefined variables with a missing
//! report, `default` fallbacks, error positions, render limits and partials.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use kairos_templates::{
    LimitKind, Limits, ParseError, PartialLoader, Partials, RenderError, RenderOptions, Rendered,
    Template,
};
use serde_json::{json, Value};

fn render(source: &str, context: Value) -> Rendered {
    Template::parse(source).unwrap().render(&context).unwrap()
}

fn out(source: &str, context: Value) -> String {
    render(source, context).output
}

#[test]
fn undefined_variables_render_empty_and_are_reported() {
    let r = render(
        "Hi {{ profile.first_name }}{{ profile.last_name }}! {{ nope }}{{ profile.first_name }}",
        json!({ "profile": { "email": "a@b.c" } }),
    );
    assert_eq!(r.output, "Hi ! ");
    assert_eq!(
        r.missing,
        vec!["profile.first_name", "profile.last_name", "nope"]
    );
}

#[test]
fn null_values_are_defined() {
    let r = render(
        "[{{ profile.first_name }}]",
        json!({ "profile": { "first_name": null } }),
    );
    assert_eq!(r.output, "[]");
    assert!(r.missing.is_empty());
}

#[test]
fn default_is_the_fallback_mechanism() {
    let t = Template::parse(r#"Hi {{ profile.first_name | default: "there" }},"#).unwrap();
    let r = t.render(&json!({ "profile": {} })).unwrap();
    assert_eq!(r.output, "Hi there,");
    assert_eq!(r.missing, vec!["profile.first_name"]);
    let r = t
        .render(&json!({ "profile": { "first_name": "Ada" } }))
        .unwrap();
    assert_eq!(r.output, "Hi Ada,");
    assert!(r.missing.is_empty());
    assert_eq!(out("{{ x | default: 'y' }}", json!({ "x": "" })), "y");
    assert_eq!(out("{{ x | default: 'y' }}", json!({ "x": false })), "y");
    assert_eq!(
        out(
            "{{ x | default: 'y', allow_false: true }}",
            json!({ "x": false })
        ),
        "false"
    );
    assert_eq!(out("{{ x | default: 'y' }}", json!({ "x": 0 })), "0");
}

#[test]
fn undefined_is_falsy_and_never_an_error() {
    let r = render(
        "{% if profile.vip %}vip{% else %}regular{% endif %}{% for i in cart.items %}x{% endfor %}\
         {% unless segments contains 'churned' %}!{% endunless %}{{ a.b.c | upcase | size }}",
        json!({}),
    );
    assert_eq!(r.output, "regular!0");
    assert_eq!(
        r.missing,
        vec!["profile.vip", "cart.items", "segments", "a.b.c"]
    );
}

#[test]
fn missing_paths_show_brackets_and_dynamic_keys() {
    let r = render(
        "{{ a[0] }}{{ a['x y'] }}{{ b[key] }}{{ forloop.index }}",
        json!({ "a": [], "b": {}, "key": "k" }),
    );
    assert_eq!(
        r.missing,
        vec!["a[0]", "a[\"x y\"]", "b[key]", "forloop.index"]
    );
}

#[test]
fn parse_errors_carry_line_and_column() {
    let err = Template::parse("Hello\n{% if x %}\nTotals: {% endfi %}").unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 3, column 12: unknown tag `endfi`, expected `endif`"
    );
    assert_eq!((err.line(), err.column()), (3, 12));
    assert!(matches!(err, ParseError::UnknownTag { .. }));

    let err = Template::parse("{% for x in xs %}\n  {{ x }}\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 1, column 4: `for` is never closed: expected `endfor`"
    );

    let err = Template::parse("ok\n  {{ price | moneyy }}").unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 2, column 14: unknown filter `moneyy`"
    );

    let err = Template::parse("{{ 'a' | append }}").unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 1, column 10: filter `append`: expected 1 argument(s), got 0"
    );

    // Columns count characters, not bytes.
    let err = Template::parse("héllo {{ x * 2 }}").unwrap_err();
    assert_eq!((err.line(), err.column()), (1, 12));

    let err = Template::parse("{{ name").unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 1, column 1: output not closed: expected `}}`"
    );

    let err = Template::parse("{% endif %}").unwrap_err();
    assert_eq!(err.to_string(), "line 1, column 4: unexpected tag `endif`");
    let err = Template::parse("{% nosuchtag %}").unwrap_err();
    assert_eq!(err.to_string(), "line 1, column 4: unknown tag `nosuchtag`");
}

#[test]
fn render_errors_only_for_real_errors() {
    let t = Template::parse("a\n{{ 10 | divided_by: n }}").unwrap();
    assert_eq!(t.render(&json!({ "n": 2 })).unwrap().output, "a\n5");
    let err = t.render(&json!({ "n": 0 })).unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 2, column 9: filter `divided_by`: divided by 0"
    );
    assert!(matches!(
        err,
        RenderError::Filter {
            line: 2,
            column: 9,
            ..
        }
    ));

    let err = Template::parse("{% if '2' > 1 %}{% endif %}")
        .unwrap()
        .render(&json!({}))
        .unwrap_err();
    assert!(matches!(err, RenderError::Type { .. }), "{err}");

    let err = Template::parse("x")
        .unwrap()
        .render(&json!([1]))
        .unwrap_err();
    assert!(matches!(err, RenderError::InvalidContext { .. }));
}

#[test]
fn loops_are_bounded_by_steps() {
    let t =
        Template::parse("{% for i in (1..100000000000) %}{% assign x = i %}{% endfor %}").unwrap();
    let err = t.render(&json!({})).unwrap_err();
    assert!(
        matches!(
            err,
            RenderError::LimitExceeded {
                kind: LimitKind::Steps,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn output_and_strings_are_bounded() {
    let limits = Limits {
        max_output_bytes: 10_000,
        ..Limits::default()
    };
    let options = RenderOptions {
        partials: None,
        limits,
    };
    let t = Template::parse("{% for i in (1..100000) %}0123456789{% endfor %}").unwrap();
    let err = t.render_with(&json!({}), &options).unwrap_err();
    assert!(
        matches!(
            err,
            RenderError::LimitExceeded {
                kind: LimitKind::OutputSize,
                ..
            }
        ),
        "{err}"
    );

    // Doubling a string never gets past the limit, whether by filter or capture.
    let t = Template::parse(
        "{% assign s = 'ab' %}{% for i in (1..64) %}{% assign s = s | append: s %}{% endfor %}",
    )
    .unwrap();
    let err = t.render_with(&json!({}), &options).unwrap_err();
    assert!(
        matches!(
            err,
            RenderError::LimitExceeded {
                kind: LimitKind::OutputSize,
                ..
            }
        ),
        "{err}"
    );
    let t = Template::parse("{% assign s = 'ab' %}{% for i in (1..64) %}{% capture s %}{{ s }}{{ s }}{% endcapture %}{% endfor %}")
        .unwrap();
    let err = t.render_with(&json!({}), &options).unwrap_err();
    assert!(
        matches!(
            err,
            RenderError::LimitExceeded {
                kind: LimitKind::OutputSize,
                ..
            }
        ),
        "{err}"
    );

    let t = Template::parse("{{ (1..1000000000) | join: ',' }}").unwrap();
    let err = t.render(&json!({})).unwrap_err();
    assert!(
        matches!(
            err,
            RenderError::LimitExceeded {
                kind: LimitKind::CollectionSize,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn include_and_render_use_the_loader() {
    let mut partials = Partials::new();
    partials
        .insert_source(
            "item",
            "- {{ item.name }} x{{ item.qty }}{% assign seen = true %}\n",
        )
        .unwrap();
    partials
        .insert_source(
            "footer",
            "{{ greeting }}<a href=\"{{ url }}\">unsubscribe</a>",
        )
        .unwrap();
    let template = Template::parse(
        "{% assign greeting = 'hi' %}{% include 'item' for cart %}{{ seen }}|{% render 'footer', url: unsubscribe_url %}",
    )
    .unwrap();
    let context = json!({
        "cart": [{ "name": "Socks", "qty": 2 }, { "name": "Hat", "qty": 1 }],
        "unsubscribe_url": "https://x.test/u"
    });
    let r = template
        .render_with(&context, &RenderOptions::with_partials(&partials))
        .unwrap();
    // `include` shares variables both ways; `render` sees only its arguments and globals.
    assert_eq!(
        r.output,
        "- Socks x2\n- Hat x1\ntrue|<a href=\"https://x.test/u\">unsubscribe</a>"
    );
    assert_eq!(r.missing, vec!["greeting"]);

    // A plain HashMap of parsed templates is a loader too.
    let mut map: HashMap<String, Template> = HashMap::new();
    map.insert("sig".into(), Template::parse("-- {{ name }}").unwrap());
    let loader: &dyn PartialLoader = &map;
    let t = Template::parse("{% render 'sig', name: 'Kairos' %}").unwrap();
    assert_eq!(
        t.render_with(&json!({}), &RenderOptions::with_partials(loader))
            .unwrap()
            .output,
        "-- Kairos"
    );

    let err = t.render(&json!({})).unwrap_err();
    assert!(
        matches!(err, RenderError::PartialNotFound { ref name, .. } if name == "sig"),
        "{err}"
    );
}

#[test]
fn recursive_partials_are_bounded() {
    let mut partials = Partials::new();
    partials
        .insert_source("loop", "x{% include 'loop' %}")
        .unwrap();
    let deep = format!(
        "{}{{% include 'deep' %}}{}",
        "{% if true %}".repeat(99),
        "{% endif %}".repeat(99)
    );
    partials.insert_source("deep", &deep).unwrap();
    for name in ["loop", "deep"] {
        let t = Template::parse(&format!("{{% include '{name}' %}}")).unwrap();
        let err = t
            .render_with(&json!({}), &RenderOptions::with_partials(&partials))
            .unwrap_err();
        assert!(matches!(err, RenderError::LimitExceeded { .. }), "{err}");
    }
}

#[test]
fn deep_nesting_is_a_parse_error() {
    let src = format!(
        "{}x{}",
        "{% if true %}".repeat(150),
        "{% endif %}".repeat(150)
    );
    assert!(matches!(
        Template::parse(&src),
        Err(ParseError::TooDeep { .. })
    ));
    let src = format!("{{{{ {}x{} }}}}", "a[".repeat(100), "]".repeat(100));
    assert!(matches!(
        Template::parse(&src),
        Err(ParseError::TooDeep { .. })
    ));
    let src = format!(
        "{{% if {} %}}y{{% endif %}}",
        vec!["true"; 20_000].join(" and ")
    );
    assert_eq!(out(&src, json!({})), "y");
}

#[test]
fn abandoned_cart_email() {
    let t = Template::parse(
        "{%- assign name = profile.first_name | default: 'there' | capitalize -%}\n\
         Hi {{ name }},\n\
         {%- for item in cart.items %}\n\
         * {{ item.name }} x{{ item.quantity }}: {{ item.price | times: item.quantity | round: 2 | prepend: '$' }}\n\
         {%- endfor %}\n\
         {% if segments contains 'vip' %}Free shipping for VIPs!{% endif %}\n\
         <a href=\"{{ unsubscribe_url }}\">Unsubscribe</a>",
    )
    .unwrap();
    let r = t
        .render(&json!({
            "profile": { "first_name": "ada" },
            "cart": { "items": [
                { "name": "Sweater", "price": 89.5, "quantity": 1 },
                { "name": "Socks", "price": 12.99, "quantity": 2 }
            ]},
            "segments": ["vip"],
            "unsubscribe_url": "https://x.test/u/1"
        }))
        .unwrap();
    assert_eq!(
        r.output,
        "Hi Ada,\n* Sweater x1: $89.5\n* Socks x2: $25.98\nFree shipping for VIPs!\n<a href=\"https://x.test/u/1\">Unsubscribe</a>"
    );
}

#[test]
fn whitespace_control_and_blank_blocks() {
    assert_eq!(
        out("a  {%- if true -%}  b  {%- endif -%}  c", json!({})),
        "abc"
    );
    assert_eq!(
        out(
            "[{% if true %}\n  {% assign x = 1 %}\n{% endif %}]",
            json!({})
        ),
        "[]"
    );
    assert_eq!(
        out("[{% for i in (1..3) %}\n{% endfor %}]", json!({})),
        "[]"
    );
    assert_eq!(
        out("[{% if true %} {{ '' }} {% endif %}]", json!({})),
        "[  ]"
    );
}

#[test]
fn filters_follow_ruby_semantics() {
    assert_eq!(out("{{ 10.1 | minus: 2.2 }}", json!({})), "7.9");
    assert_eq!(
        out(
            "{{ 9 | divided_by: 2 }} {{ 9 | divided_by: 2.0 }}",
            json!({})
        ),
        "4 4.5"
    );
    assert_eq!(
        out(
            "{{ 2.675 | round: 2 }} {{ 5 | round: 2 }} {{ 5.5 | round }}",
            json!({})
        ),
        "2.68 5 6"
    );
    assert_eq!(
        out("{{ 'March 14, 2016' | date: '%b %-d, %Y' }}", json!({})),
        "Mar 14, 2016"
    );
    assert_eq!(
        out(
            "{{ t | date: '%Y-%m-%dT%H:%M:%S%:z' }}",
            json!({ "t": 1_700_000_000 })
        ),
        "2023-11-14T22:13:20+00:00"
    );
    assert_eq!(
        out(
            "{{ '<b>&amp;' | escape }} {{ '<b>&amp;' | escape_once }}",
            json!({})
        ),
        "&lt;b&gt;&amp;amp; &lt;b&gt;&amp;"
    );
    assert_eq!(
        out(
            "{{ 'a b' | url_encode }} {{ 'a+b%21' | url_decode }}",
            json!({})
        ),
        "a+b a b!"
    );
    assert_eq!(
        out(
            "{{ xs | where: 'on' | map: 'n' | join: ',' }}",
            json!({ "xs": [
        { "n": 1, "on": true }, { "n": 2, "on": false }, { "n": 3, "on": true }
    ] })
        ),
        "1,3"
    );
    assert_eq!(
        out(
            "{{ xs | sort_natural | join }}",
            json!({ "xs": ["b", "A", "c"] })
        ),
        "A b c"
    );
    assert_eq!(
        out("{{ 'one two three' | truncatewords: 2 }}", json!({})),
        "one two..."
    );
    assert_eq!(
        out("{{ 'hello' | base64_encode | base64_decode }}", json!({})),
        "hello"
    );
}

#[test]
fn templates_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Template>();
    assert_send_sync::<Partials>();
}

#[test]
fn render_into_reuses_the_buffer() {
    let t = Template::parse("Hi {{ name | default: 'there' }}").unwrap();
    let mut buf = String::from("stale");
    let missing = t
        .render_into(
            &json!({ "name": "Ada" }),
            &RenderOptions::default(),
            &mut buf,
        )
        .unwrap();
    assert_eq!((buf.as_str(), missing.len()), ("Hi Ada", 0));
    let missing = t
        .render_into(&json!({}), &RenderOptions::default(), &mut buf)
        .unwrap();
    assert_eq!(
        (buf.as_str(), missing),
        ("Hi there", vec!["name".to_string()])
    );
}
