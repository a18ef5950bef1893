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

fn bench(c: &mut Criterion) {
    let template = Template::parse(CART_EMAIL).unwrap();
    let ctx = context();
    let rendered = template.render(&ctx).unwrap();
    assert!(rendered.output.contains("$25.98"), "{}", rendered.output);
    assert!(rendered.missing.is_empty(), "{:?}", rendered.missing);

    let mut group = c.benchmark_group("abandoned_cart");
    group.throughput(Throughput::Elements(1));
    group.bench_function("render", |b| {
        b.iter(|| template.render(std::hint::black_box(&ctx)).unwrap())
    });
    group.bench_function("parse", |b| {
        b.iter(|| Template::parse(std::hint::black_box(CART_EMAIL)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
