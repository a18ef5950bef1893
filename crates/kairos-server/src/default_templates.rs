//! The templates of the built-in campaigns (see `kairos_core::defaults`), stored in a new
//! store so the default flows can send from the first minute. They show the variables a
//! template sees and the fallbacks the source documents ask for (`default: "there"`), and
//! guard `recommendations`, which is empty until recommendations exist.

use crate::messages::TemplateDef;

const FOOTER_HTML: &str = r#"<hr><p style="font-size:12px;color:#777">You get this because you subscribed at our shop.
{% if unsubscribe_url %}<a href="{{ unsubscribe_url }}">Unsubscribe</a>{% endif %}</p>"#;
const FOOTER_TEXT: &str =
    "\n--\nYou get this because you subscribed at our shop.{% if unsubscribe_url %}\nUnsubscribe: {{ unsubscribe_url }}{% endif %}\n";

const RECOMMENDATIONS_HTML: &str = r#"{% if recommendations.size > 0 %}<h3>You may also like</h3><table>
{% for r in recommendations limit: 4 %}<tr>{% if r.image_url %}<td><img src="{{ r.image_url }}" alt="" width="96"></td>{% endif %}<td>{% if r.url %}<a href="{{ r.url }}">{{ r.title | default: r.name }}</a>{% else %}{{ r.title | default: r.name }}{% endif %}{% if r.price %} - {{ r.price | round: 2 }}{% endif %}<br><small>{{ r.reason_text }}</small></td></tr>
{% endfor %}</table>{% else %}<p>Your cart is saved: pick up where you left off whenever you like.</p>{% endif %}"#;
const RECOMMENDATIONS_TEXT: &str = "{% if recommendations.size > 0 %}\nYou may also like:\n{% for r in recommendations limit: 4 %}- {{ r.title | default: r.name }}{% if r.price %} ({{ r.price | round: 2 }}){% endif %}{% if r.url %} {{ r.url }}{% endif %}\n{% endfor %}{% endif %}";

fn t(subject: &str, html: &str, text: &str, description: &str) -> TemplateDef {
    TemplateDef {
        subject: subject.into(),
        html: Some(format!("{html}\n{FOOTER_HTML}")),
        text: Some(format!("{text}{FOOTER_TEXT}")),
        description: description.into(),
    }
}

pub fn default_templates() -> Vec<(&'static str, TemplateDef)> {
    vec![
        (
            "cart_abandonment",
            t(
                "{{ profile.first_name | default: \"Hi\" }}, your cart is waiting",
                &format!(
                    r#"<p>Hi {{{{ profile.first_name | default: "there" }}}},</p>
<p>You left {{{{ profile.cart.items.size }}}} item{{% if profile.cart.items.size != 1 %}}s{{% endif %}} in your cart:</p>
<table>{{% for item in profile.cart.items %}}
<tr><td>{{{{ item.name | default: item.product_id }}}}</td><td>x {{{{ item.quantity }}}}</td><td>{{{{ item.price | times: item.quantity | round: 2 }}}}</td></tr>{{% endfor %}}
</table>
<p>Total: {{{{ profile.cart.value | round: 2 }}}}</p>
{RECOMMENDATIONS_HTML}"#
                ),
                &format!("Hi {{{{ profile.first_name | default: \"there\" }}}},\n\nYou left these in your cart:\n{{% for item in profile.cart.items %}}- {{{{ item.name | default: item.product_id }}}} x {{{{ item.quantity }}}}\n{{% endfor %}}Total: {{{{ profile.cart.value | round: 2 }}}}\n{RECOMMENDATIONS_TEXT}"),
                "Abandoned cart: the items, their total, and recommendations when there are any.",
            ),
        ),
        (
            "vip_early_access",
            t(
                "Early access for you, {{ profile.first_name | default: \"VIP\" }}",
                "<p>Hi {{ profile.first_name | default: \"there\" }},</p><p>As one of our best customers you see the new collection before anyone else, starting today.</p>",
                "Hi {{ profile.first_name | default: \"there\" }},\n\nAs one of our best customers you see the new collection before anyone else, starting today.\n",
                "VIP early access.",
            ),
        ),
        (
            "win_back",
            t(
                "We miss you{% if profile.first_name %}, {{ profile.first_name }}{% endif %}",
                "<p>It has been a while. Here is 15% off your next order: <b>COMEBACK15</b>.</p>",
                "It has been a while. Here is 15% off your next order: COMEBACK15.\n",
                "Win-back for lapsed customers.",
            ),
        ),
        (
            "welcome_1",
            t(
                "Welcome, {{ profile.first_name | default: \"friend\" }}!",
                "<p>Thanks for subscribing. Over the next days we will show you around.</p>",
                "Thanks for subscribing. Over the next days we will show you around.\n",
                "Welcome series, first email.",
            ),
        ),
        (
            "welcome_2",
            t(
                "Our best sellers",
                "<p>Here is what other customers love most.</p>",
                "Here is what other customers love most.\n",
                "Welcome series, second email (day 2).",
            ),
        ),
        (
            "welcome_3",
            t(
                "A little something for your first order",
                "<p>Use <b>WELCOME10</b> for 10% off your first order.</p>",
                "Use WELCOME10 for 10% off your first order.\n",
                "Welcome series, third email (day 7).",
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{compile, context, render};
    use kairos_core::{CoreConfig, Event, EventKind, Profile, ProfileId, Scoring};
    use serde_json::json;

    #[test]
    fn the_built_in_templates_parse_and_render_a_cart_with_fallbacks() {
        let scoring = Scoring::compile(&kairos_core::defaults::default_definitions(), None)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut p = Profile::new(ProfileId(1));
        let ev = Event {
            message_id: "m1".into(),
            kind: EventKind::Track,
            event: Some("Added to Cart".into()),
            name: None,
            user_id: Some("u1".into()),
            anonymous_id: None,
            previous_id: None,
            group_id: None,
            timestamp: 1_795_348_800_000,
            received_at: 1_795_348_800_000,
            properties:
                json!({"product_id": "sku-1", "name": "Trail Shoes", "price": 89.5, "quantity": 2})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            traits: Default::default(),
            context: Default::default(),
            source: String::new(),
        };
        p.apply(&ev, &CoreConfig::default(), &scoring, ev.received_at);
        for (name, def) in default_templates() {
            let t = compile(&def).unwrap_or_else(|e| panic!("{name}: {}", e.message));
            let ctx = context(
                Some(&p),
                &scoring,
                ev.received_at,
                json!({}),
                json!({"name": name}),
                Some("https://k.example/u".into()),
            );
            let out = render(&t, &ctx).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!out.subject.is_empty(), "{name}");
            let html = out.html.unwrap_or_default();
            assert!(html.contains("https://k.example/u"), "{name}: {html}");
            if name == "cart_abandonment" {
                assert_eq!(out.subject, "Hi, your cart is waiting");
                assert!(html.contains("Hi there,"), "{html}");
                assert!(
                    html.contains("Trail Shoes") && html.contains("179"),
                    "{html}"
                );
                assert!(
                    !html.contains("You may also like") && html.contains("Your cart is saved"),
                    "no recommendations yet, the fallback instead: {html}"
                );
                let mut with = ctx.clone();
                with["recommendations"] = json!([{"title": "Trail Socks", "price": 9.5,
                    "url": "https://shop.example/socks", "reason_text": "often bought with Trail Shoes"}]);
                let out = render(&t, &with).unwrap_or_else(|e| panic!("{name}: {e}"));
                let html = out.html.unwrap_or_default();
                assert!(
                    html.contains("You may also like") && html.contains("Trail Socks"),
                    "{html}"
                );
                assert!(html.contains("often bought with Trail Shoes"), "{html}");
                assert!(out
                    .text
                    .unwrap_or_default()
                    .contains("- Trail Socks (9.5) https://shop.example/socks"));
            }
        }
    }
}
