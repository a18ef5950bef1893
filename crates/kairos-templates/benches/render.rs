//! Render and parse speed for a typical abandoned-cart email.
#![allow(clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kairos_templates::Template;
use serde_json::json;

const CART_EMAIL: &str = r#"{%- assign name = profile.first_name | default: "there" | capitalize -%}
<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>{{ campaign.subject | default: "You left something behind" }}</title></head>
<body style="font-family: Helvetica, Arial, sans-serif; color: #222222; margin: 0; padding: 24px;">
  <h1 style="font-size: 22px;">Hi {{ name }}, you left something in your cart!</h1>
  <p>We saved the items below for you. They are popular, so they may not be around for long.</p>
  <table width="100%" cellpadding="8" cellspacing="0" style="border-collapse: collapse;">
    <tr><th align="left">Item</th><th align="center">Qty</th><th align="right">Price</th></tr>
    {%- for item in event.properties.cart.items %}
    <tr>
      <td>{{ item.name | escape }}</td>
      <td align="center">{{ item.quantity }}</td>
      <td align="right">{{ item.price | times: item.quantity | round: 2 | prepend: "$" }}</td>
    </tr>
    {%- endfor %}
  </table>
  <p><strong>Total: {{ event.properties.cart.total | round: 2 | prepend: "$" }}</strong></p>
  {%- if segments contains "vip" %}
  <p>As a VIP you get free express shipping with code <b>{{ campaign.vip_code | upcase }}</b>.</p>
  {%- else %}
  <p>Complete your order in the next 24 hours and shipping is on us.</p>
  {%- endif %}
  <p><a href="{{ campaign.checkout_url }}?utm_source=email&amp;utm_campaign={{ campaign.id }}"
        style="background: #0a7cff; color: #ffffff; padding: 12px 20px; text-decoration: none;">Return to your cart</a></p>
  <p style="font-size: 12px; color: #888888;">You are receiving this email because you created an account at
  Example Store. <a href="{{ unsubscribe_url }}">Unsubscribe</a> at any time.</p>
</body>
</html>
"#;

fn context() -> serde_json::Value {
    json!({
        "profile": { "id": "p_1234", "email": "ada@example.com", "first_name": "ada" },
        "scores": { "engagement": 0.82, "churn": 0.1 },
        "segments": ["newsletter", "vip"],
        "event": { "name": "Cart Abandoned", "properties": { "cart": {
            "items": [
                { "name": "Merino wool sweater", "price": 89.5, "quantity": 1 },
                { "name": "Socks & stockings (3-pack)", "price": 12.99, "quantity": 2 },
                { "name": "Canvas tote bag", "price": 24.0, "quantity": 1 }
            ],
            "total": 139.48
        }}},
        "campaign": { "id": "cart-recovery-1", "subject": "Still thinking it over?",
                      "checkout_url": "https://shop.example.com/cart", "vip_code": "vipship" },
        "unsubscribe_url": "https://shop.example.com/u/abc123",
        "recommendations": []
    })
}

/// The same email written by hand in Rust from the same JSON context: the ceiling a template
/// engine is measured against (the ratio is reported in docs/PERFORMANCE.md).
fn handwritten(ctx: &serde_json::Value, out: &mut String) {
    use std::fmt::Write;
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    // Liquid prints a float that happens to be whole as `24.0`.
    let money = |x: f64| {
        let x = (x * 100.0).round() / 100.0;
        if x.fract() == 0.0 {
            format!("{x:.1}")
        } else {
            format!("{x}")
        }
    };
    let mut name = s(&ctx["profile"]["first_name"]);
    if name.is_empty() {
        name = "there".into();
    }
    let mut c = name.chars();
    let name: String = c
        .next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default();
    let campaign = &ctx["campaign"];
    let _ = write!(out, "<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"><title>{}</title></head>\n<body style=\"font-family: Helvetica, Arial, sans-serif; color: #222222; margin: 0; padding: 24px;\">\n  <h1 style=\"font-size: 22px;\">Hi {name}, you left something in your cart!</h1>\n  <p>We saved the items below for you. They are popular, so they may not be around for long.</p>\n  <table width=\"100%\" cellpadding=\"8\" cellspacing=\"0\" style=\"border-collapse: collapse;\">\n    <tr><th align=\"left\">Item</th><th align=\"center\">Qty</th><th align=\"right\">Price</th></tr>", s(&campaign["subject"]));
    let cart = &ctx["event"]["properties"]["cart"];
    for item in cart["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let q = item["quantity"].as_f64().unwrap_or(0.0);
        let price = item["price"].as_f64().unwrap_or(0.0) * q;
        let escaped = s(&item["name"])
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        let _ = write!(out, "\n    <tr>\n      <td>{escaped}</td>\n      <td align=\"center\">{q}</td>\n      <td align=\"right\">${}</td>\n    </tr>", money(price));
    }
    let total = money(cart["total"].as_f64().unwrap_or(0.0));
    let _ = write!(
        out,
        "\n  </table>\n  <p><strong>Total: ${total}</strong></p>"
    );
    let vip = ctx["segments"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == "vip"));
    if vip {
        let _ = write!(
            out,
            "\n  <p>As a VIP you get free express shipping with code <b>{}</b>.</p>",
            s(&campaign["vip_code"]).to_uppercase()
        );
    } else {
        out.push_str("\n  <p>Complete your order in the next 24 hours and shipping is on us.</p>");
    }
    let _ = write!(out, "\n  <p><a href=\"{}?utm_source=email&amp;utm_campaign={}\"\n        style=\"background: #0a7cff; color: #ffffff; padding: 12px 20px; text-decoration: none;\">Return to your cart</a></p>\n  <p style=\"font-size: 12px; color: #888888;\">You are receiving this email because you created an account at\n  Example Store. <a href=\"{}\">Unsubscribe</a> at any time.</p>\n</body>\n</html>\n", s(&campaign["checkout_url"]), s(&campaign["id"]), s(&ctx["unsubscribe_url"]));
}

fn bench(c: &mut Criterion) {
    let template = Template::parse(CART_EMAIL).unwrap();
    let ctx = context();
    let rendered = template.render(&ctx).unwrap();
    assert!(rendered.output.contains("$25.98"), "{}", rendered.output);
    assert!(rendered.missing.is_empty(), "{:?}", rendered.missing);

    let mut by_hand = String::new();
    handwritten(&ctx, &mut by_hand);
    assert_eq!(
        by_hand, rendered.output,
        "the baseline renders the same email"
    );

    let mut group = c.benchmark_group("abandoned_cart");
    group.throughput(Throughput::Elements(1));
    group.bench_function("render", |b| {
        b.iter(|| template.render(std::hint::black_box(&ctx)).unwrap())
    });
    group.bench_function("handwritten Rust (baseline)", |b| {
        b.iter(|| {
            let mut out = String::with_capacity(2048);
            handwritten(std::hint::black_box(&ctx), &mut out);
            out
        })
    });
    group.bench_function("parse", |b| {
        b.iter(|| Template::parse(std::hint::black_box(CART_EMAIL)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
