//! The scores and segments a fresh Kairos starts with: the ones the source documents describe
//! (VIP, cart abandoners, recent viewers, active shoppers, lapsed, engaged, new subscribers;
//! engagement and purchase intent), written in the rule language over the shop events that
//! Segment's e-commerce spec and `kairos simulate` send.
//!
//! The campaigns are the documents' flows: abandoned cart (30 minutes, exit on order), VIP
//! early access, win-back for lapsed people, and a welcome series; their templates ship in the
//! server's defaults.
//!
//! Priorities follow the documents' overlap table (VIP 1 > Recent Browsers 2 > Lapsed 3),
//! with cart abandoners between VIP and browsers: an abandoned cart is the most actionable.

use crate::scoring::Definitions;
use serde_json::json;

/// The built-in definitions.
pub fn default_definitions() -> Definitions {
    let v = json!({
        "scores": {
            "engagement": {
                "description": "How actively the person reads, clicks and shops; halves every 14 days without activity.",
                "half_life": "14d",
                "min": 0, "max": 100,
                "tiers": "cold < 30 <= warm < 70 <= hot",
                "rules": [
                    "when event.name == \"Email Opened\" then +5 at most 3 times per 1d",
                    "when event.name in [\"Email Clicked\", \"Email Link Clicked\"] then +10 at most 5 times per 1d",
                    "when event.type == \"page\" or event.name == \"Product Viewed\" then +1 at most 10 times per 1d",
                    "when event.name in [\"Added to Cart\", \"Product Added\"] then +5 at most 4 times per 1d",
                    "when event.name == \"Order Completed\" then +20",
                    "when event.name in [\"Unsubscribed\", \"Email Unsubscribed\"] then -30",
                    "when event.name == \"Email Bounced\" then -20",
                    "when event.name in [\"Marked as Spam\", \"Email Marked as Spam\"] then -50"
                ]
            },
            "purchase_intent": {
                "description": "Short-lived signal that the person is about to buy; halves every 3 days, drops on purchase.",
                "half_life": "3d",
                "min": 0, "max": 100,
                "tiers": "low < 20 <= medium < 50 <= high",
                "rules": [
                    "when event.name == \"Product Viewed\" then +2 at most 15 times per 1d",
                    "when event.name == \"Product Viewed\" and event.properties.price >= 100 then +3 at most 5 times per 1d",
                    "when event.name in [\"Added to Cart\", \"Product Added\"] then +10 at most 5 times per 1d",
                    "when event.name == \"Checkout Started\" then +20",
                    "when event.name == \"Order Completed\" then -40"
                ]
            }
        },
        "segments": {
            "vip": {
                "description": "Top spenders: lifetime spend over 1,000, at least 3 orders, the last within 30 days.",
                "rule": "lifetime_revenue > 1000 and orders >= 3 and last_order < 30d",
                "priority": 1
            },
            "cart_abandoners": {
                "description": "Added to cart at least 30 minutes ago (and within a day) with no order since.",
                "rule": "cart_items > 0 and last(\"Added to Cart\") >= 30m and last(\"Added to Cart\") < 24h and not did(\"Order Completed\", since: \"Added to Cart\")",
                "priority": 2
            },
            "recent_viewers": {
                "description": "Viewed a product in the last 10 minutes.",
                "rule": "did(\"Product Viewed\", within: 10m)",
                "priority": 3
            },
            "active_shoppers": {
                "description": "Any activity in the last 15 minutes.",
                "rule": "last_seen < 15m",
                "priority": 4
            },
            "lapsed": {
                "description": "No activity in the last 60 days.",
                "rule": "last_seen > 60d",
                "priority": 5
            },
            "engaged": {
                "description": "Opened or clicked an email in the last 7 days.",
                "rule": "did(\"Email Opened\", within: 7d) or did(\"Email Clicked\", within: 7d) or did(\"Email Link Clicked\", within: 7d)",
                "priority": 6
            },
            "new_subscribers": {
                "description": "Subscribed to marketing and first seen in the last 14 days.",
                "rule": "subscribed(\"marketing\") and first_seen < 14d",
                "priority": 7
            }
        },
        "campaigns": {
            "cart_abandonment": {
                "description": "30 minutes after an add to cart with no order since: the cart's items and recommendations.",
                "trigger": {"event": "event.name in [\"Added to Cart\", \"Product Added\"]"},
                "wait": "30m",
                "exit": "did(\"Order Completed\", since: trigger)",
                "template": "cart_abandonment",
                "priority": 2,
                "caps": ["1 per 1d"],
                "conversion": {"event": "Order Completed", "within": "3d"}
            },
            "vip_early_access": {
                "description": "Early access to new collections when a person becomes a VIP.",
                "trigger": {"segment": "vip"},
                "template": "vip_early_access",
                "priority": 1,
                "reentry": "30d",
                "conversion": {"event": "Order Completed", "within": "7d"}
            },
            "win_back": {
                "description": "Every Monday at 10:00 (UTC), people lapsed for 60 days get an offer; at most once a month.",
                "trigger": {"schedule": "weekly mon 10:00", "segment": "lapsed"},
                "template": "win_back",
                "priority": 3,
                "reentry": "30d",
                "conversion": {"event": "Order Completed", "within": "14d"}
            },
            "welcome_series": {
                "description": "Three emails to new subscribers: at once, after 2 days, after 5 more; stops when they buy.",
                "trigger": {"segment": "new_subscribers"},
                "steps": [
                    {"template": "welcome_1"},
                    {"wait": "2d", "template": "welcome_2"},
                    {"wait": "5d", "template": "welcome_3"}
                ],
                "exit": "did(\"Order Completed\", since: trigger)",
                "priority": 4,
                "reentry": "never",
                "conversion": {"event": "Order Completed", "within": "7d"}
            }
        }
    });
    // The literal above is a valid Definitions document; a unit test compiles it.
    serde_json::from_value(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoring::Scoring;

    #[test]
    fn the_defaults_compile_without_warnings() {
        let d = default_definitions();
        assert_eq!(d.scores.len(), 2);
        assert_eq!(d.segments.len(), 7);
        assert_eq!(d.campaigns.len(), 4);
        let s = Scoring::compile(&d, None).expect("defaults compile");
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }
}
