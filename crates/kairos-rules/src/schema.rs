//! What a rule may name: built-in fields, and the scores, tiers, segments and event names
//! the host knows. The host builds a [`Schema`]; the checker resolves names against it.

use std::collections::BTreeSet;

/// A value's type, as the checker sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum Type {
    Bool,
    Num,
    Str,
    /// A length of time (`15m`).
    Dur,
    /// An instant (`last_seen`); compared with a duration it means its age.
    Time,
    /// A literal list, only after `in`.
    List(Box<Type>),
    /// Known only at run time: traits and event properties (JSON).
    Any,
    Null,
}

impl Type {
    pub fn describe(&self) -> &'static str {
        match self {
            Type::Bool => "true/false",
            Type::Num => "a number",
            Type::Str => "a string",
            Type::Dur => "a duration",
            Type::Time => "a time",
            Type::List(_) => "a list",
            Type::Any => "a trait or property value",
            Type::Null => "null",
        }
    }
}

macro_rules! fields {
    ($($variant:ident $name:literal $ty:ident $doc:literal;)*) => {
        /// Built-in fields of the profile, named directly in rules (`orders >= 3`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Field { $(#[doc = $doc] $variant,)* }

        impl Field {
            pub const ALL: &'static [Field] = &[$(Field::$variant,)*];

            pub fn name(self) -> &'static str {
                match self { $(Field::$variant => $name,)* }
            }

            pub fn ty(self) -> Type {
                match self { $(Field::$variant => Type::$ty,)* }
            }

            pub fn doc(self) -> &'static str {
                match self { $(Field::$variant => $doc,)* }
            }

            pub fn by_name(name: &str) -> Option<Field> {
                match name { $($name => Some(Field::$variant),)* _ => None }
            }
        }
    };
}

fields! {
    Orders "orders" Num "Number of orders ever placed.";
    LifetimeRevenue "lifetime_revenue" Num "Sum of order revenue.";
    EventCount "event_count" Num "Number of events ever received for the person.";
    CartValue "cart_value" Num "Value of the items currently in the cart.";
    CartItems "cart_items" Num "Number of items currently in the cart.";
    EmailDelivered "email_delivered" Num "Emails delivered.";
    EmailOpens "email_opens" Num "Emails opened.";
    EmailClicks "email_clicks" Num "Email links clicked.";
    FirstSeen "first_seen" Time "Time of the first event.";
    LastSeen "last_seen" Time "Time of the newest event.";
    FirstOrder "first_order" Time "Time of the first order.";
    LastOrder "last_order" Time "Time of the newest order.";
    LastEmailOpen "last_email_open" Time "Time of the newest email open.";
    LastEmailClick "last_email_click" Time "Time of the newest email click.";
    LocalHour "local_hour" Num "Hour of the day (0-23) now, in the person's time zone (UTC if unknown).";
    LocalWeekday "local_weekday" Num "Day of the week now in the person's time zone, 1 = Monday ... 7 = Sunday.";
    Timezone "timezone" Str "The person's IANA time zone, if known.";
    Suppressed "suppressed" Bool "The address must not be mailed (hard bounce or spam complaint).";
}

/// A score as rules see it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScoreInfo {
    pub name: String,
    pub tiers: Vec<String>,
}

/// Names a rule may refer to, beyond the built-in fields.
#[derive(Clone, Debug, Default)]
pub struct Schema {
    pub scores: Vec<ScoreInfo>,
    pub segments: Vec<String>,
    /// Event names seen so far; a rule naming another is accepted with a warning.
    /// `None`: no warnings (nothing known yet).
    pub known_events: Option<BTreeSet<String>>,
    /// Whether `event.*` may be used: true for rules evaluated on an incoming event
    /// (score rules, campaign triggers), false for segments, which are evaluated at any time.
    pub event_context: bool,
    /// Whether `since: trigger` may be used: campaign exit and wait-until rules, evaluated
    /// while a person is in a campaign that a trigger started.
    pub trigger_context: bool,
}

impl Schema {
    pub fn score_index(&self, name: &str) -> Option<usize> {
        self.scores.iter().position(|s| s.name == name)
    }

    pub fn segment_index(&self, name: &str) -> Option<usize> {
        self.segments.iter().position(|s| s == name)
    }
}
