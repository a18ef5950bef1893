//! Which event names mean what. Defaults cover both the names the Segment e-commerce and
//! email specs use and the shorter names many shops send.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Vocabulary {
    pub order: Vec<String>,
    pub cart_add: Vec<String>,
    pub cart_remove: Vec<String>,
    pub email_delivered: Vec<String>,
    pub email_opened: Vec<String>,
    pub email_clicked: Vec<String>,
    pub email_bounced: Vec<String>,
    pub spam_complaint: Vec<String>,
    pub unsubscribe: Vec<String>,
    pub subscribe: Vec<String>,
    pub consent: Vec<String>,
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

impl Default for Vocabulary {
    fn default() -> Self {
        Self {
            order: names(&["Order Completed"]),
            cart_add: names(&["Added to Cart", "Product Added"]),
            cart_remove: names(&["Removed from Cart", "Product Removed"]),
            email_delivered: names(&["Email Delivered"]),
            email_opened: names(&["Email Opened"]),
            email_clicked: names(&["Email Clicked", "Email Link Clicked"]),
            email_bounced: names(&["Email Bounced"]),
            spam_complaint: names(&["Marked as Spam", "Email Marked as Spam"]),
            unsubscribe: names(&["Unsubscribed", "Email Unsubscribed"]),
            subscribe: names(&["Subscribed", "Email Subscribed"]),
            consent: names(&["Consent Updated"]),
        }
    }
}

macro_rules! predicates {
    ($($fn_name:ident => $field:ident),* $(,)?) => {
        impl Vocabulary {
            $(pub fn $fn_name(&self, name: &str) -> bool {
                self.$field.iter().any(|n| n == name)
            })*
        }
    };
}

predicates! {
    is_order => order,
    is_cart_add => cart_add,
    is_cart_remove => cart_remove,
    is_email_delivered => email_delivered,
    is_email_opened => email_opened,
    is_email_clicked => email_clicked,
    is_email_bounced => email_bounced,
    is_spam_complaint => spam_complaint,
    is_unsubscribe => unsubscribe,
    is_subscribe => subscribe,
    is_consent => consent,
}
