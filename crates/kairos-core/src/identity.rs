//! Identity resolution rules: which profile an event belongs to, which identifiers it links,
//! and which profiles it merges. Pure: the caller supplies lookups into its identity index.
//!
//! The rules (Segment Unify's defaults, written down because they decide what a "person" is):
//! 1. Identifiers are `userId`, `anonymousId`, `email` (trimmed, lower-cased) from identify
//!    traits, and any configured trait (e.g. `phone`) from identify traits.
//! 2. A profile holds at most one `userId`, except where an explicit `alias` joined two.
//! 3. An event with a `userId` goes to that userId's profile (created if new). Its other
//!    identifiers are linked to that profile when free, and a profile they already belong to
//!    is merged into it when that profile has no userId. When they belong to a profile with a
//!    *different* userId, nothing is linked or merged (two known people sharing a device or an
//!    email stay two people) and the conflict is reported.
//! 4. An event without a `userId` goes to the profile of its `anonymousId` (then email, then
//!    custom identifiers); other profiles found through its identifiers are merged into it
//!    under the same rule 3 restriction.
//! 5. `alias(previousId -> userId)` always merges the profile of `previousId` (as userId or
//!    anonymousId) into the profile of `userId`: it is the explicit instruction to join. The
//!    target holds `previousId` as an anonymousId; an event whose userId is not known yet is
//!    also looked up as an anonymousId, so events under the old id that arrive later (or
//!    arrived late) join the same person whatever the arrival order.
//! 6. A profile's id is derived from its identifiers ([`canonical_id`]): its smallest userId,
//!    else smallest anonymousId, else email. So the same events give the same ids in any order.

use crate::event::{Event, EventKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt;

/// Kairos profile id. Displayed as `p_` + 16 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProfileId(pub u64);

impl fmt::Display for ProfileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p_{:016x}", self.0)
    }
}

impl std::str::FromStr for ProfileId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let hex = s.strip_prefix("p_").ok_or(())?;
        if hex.len() != 16 {
            return Err(());
        }
        u64::from_str_radix(hex, 16).map(ProfileId).map_err(|_| ())
    }
}

/// The kinds of identifier, in priority order (the derive order is used for canonical ids).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum IdKind {
    User,
    Anonymous,
    Email,
    Trait(String),
}

impl IdKind {
    pub fn label(&self) -> String {
        match self {
            Self::User => "userId".into(),
            Self::Anonymous => "anonymousId".into(),
            Self::Email => "email".into(),
            Self::Trait(t) => format!("trait:{t}"),
        }
    }
}

/// One identifier of a person.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IdKey {
    pub kind: IdKind,
    pub value: String,
}

impl IdKey {
    pub fn user(v: &str) -> Self {
        Self {
            kind: IdKind::User,
            value: v.to_string(),
        }
    }
    pub fn anonymous(v: &str) -> Self {
        Self {
            kind: IdKind::Anonymous,
            value: v.to_string(),
        }
    }
    pub fn email(v: &str) -> Option<Self> {
        normalize_email(v).map(|value| Self {
            kind: IdKind::Email,
            value,
        })
    }

    /// Bytes used as the key of the identity index: kind tag, 0, value.
    pub fn index_key(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.value.len() + 8);
        match &self.kind {
            IdKind::User => k.push(b'u'),
            IdKind::Anonymous => k.push(b'a'),
            IdKind::Email => k.push(b'e'),
            IdKind::Trait(t) => {
                k.push(b't');
                k.extend_from_slice(t.as_bytes());
            }
        }
        k.push(0);
        k.extend_from_slice(self.value.as_bytes());
        k
    }

    pub fn from_index_key(k: &[u8]) -> Option<Self> {
        let sep = k.iter().position(|b| *b == 0)?;
        let (head, rest) = (k.get(..sep)?, k.get(sep + 1..)?);
        let value = String::from_utf8(rest.to_vec()).ok()?;
        let kind = match head.first()? {
            b'u' => IdKind::User,
            b'a' => IdKind::Anonymous,
            b'e' => IdKind::Email,
            b't' => IdKind::Trait(String::from_utf8(head.get(1..)?.to_vec()).ok()?),
            _ => return None,
        };
        Some(Self { kind, value })
    }
}

/// Emails compare trimmed and lower-cased; anything without an `@` is not an email.
pub fn normalize_email(s: &str) -> Option<String> {
    let s = s.trim().to_lowercase();
    let (local, domain) = s.split_once('@')?;
    if local.is_empty() || domain.is_empty() || s.len() > 320 {
        return None;
    }
    Some(s)
}

/// Identifiers carried by one event, in priority order.
pub fn event_identifiers(ev: &Event, identity_traits: &[String]) -> Vec<IdKey> {
    let mut ids = Vec::with_capacity(3);
    if let Some(u) = &ev.user_id {
        ids.push(IdKey::user(u));
    }
    if let Some(a) = &ev.anonymous_id {
        ids.push(IdKey::anonymous(a));
    }
    if ev.kind == EventKind::Identify {
        if let Some(e) = ev
            .traits
            .get("email")
            .and_then(Value::as_str)
            .and_then(IdKey::email)
        {
            ids.push(e);
        }
        for t in identity_traits {
            let v = match ev.traits.get(t) {
                Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
                Some(Value::Number(n)) => n.to_string(),
                _ => continue,
            };
            ids.push(IdKey {
                kind: IdKind::Trait(t.clone()),
                value: v,
            });
        }
    }
    ids
}

/// A profile found through an identifier, as much as the rules need to know of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub id: ProfileId,
    pub user_ids: Vec<String>,
}

/// What the writer must do for one event.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Plan {
    /// The profile the event belongs to; `None`: create one.
    pub target: Option<ProfileId>,
    /// Profiles to merge into the target (in ascending id order).
    pub merge: Vec<ProfileId>,
    /// Identifiers to point at the target.
    pub link: Vec<IdKey>,
    /// Identifiers left with another person because of rule 3.
    pub conflicts: Vec<IdKey>,
}

fn has_other_user(found: &Found, user: &str) -> bool {
    !found.user_ids.is_empty() && !found.user_ids.iter().any(|u| u == user)
}

/// Applies the rules above. `lookup` answers "which profile holds this identifier".
pub fn plan(
    ev: &Event,
    identity_traits: &[String],
    mut lookup: impl FnMut(&IdKey) -> Option<Found>,
) -> Plan {
    let ids = event_identifiers(ev, identity_traits);
    let mut plan = Plan::default();

    if ev.kind == EventKind::Alias {
        let (Some(user), Some(prev)) = (&ev.user_id, &ev.previous_id) else {
            return plan;
        };
        let target = lookup(&IdKey::user(user));
        plan.target = target.as_ref().map(|f| f.id);
        if target.is_none() {
            plan.link.push(IdKey::user(user));
        }
        // previousId may have been a userId or an anonymousId: whatever holds either is
        // merged. The target always holds it as an anonymousId, so that later (or late)
        // events under it land here: anonymous ones directly, ones with it as userId through
        // the fallback lookup below (rule 5).
        if let Some(f) = lookup(&IdKey::user(prev)) {
            push_merge(&mut plan, f.id);
        }
        match lookup(&IdKey::anonymous(prev)) {
            Some(f) => push_merge(&mut plan, f.id),
            None => plan.link.push(IdKey::anonymous(prev)),
        }
        for key in ids.iter().skip(1) {
            consider(&mut plan, key, None, &mut lookup);
        }
        return finish(plan);
    }

    let primary_user = ev.user_id.as_deref();
    let mut target: Option<Found> = None;
    let mut rest = ids.iter();
    if let Some(user) = primary_user {
        rest.next();
        let key = IdKey::user(user);
        match lookup(&key) {
            Some(f) => target = Some(f),
            None => {
                // A userId first seen as an alias's previousId (held as an anonymousId).
                target = lookup(&IdKey::anonymous(user));
                plan.link.push(key);
            }
        }
    } else {
        // Anonymous event: the first identifier that resolves picks the profile.
        for key in ids.iter() {
            if let Some(f) = lookup(key) {
                target = Some(f);
                break;
            }
        }
    }
    plan.target = target.as_ref().map(|f| f.id);
    let target_users: Vec<String> = match (&target, primary_user) {
        (Some(f), _) => f.user_ids.clone(),
        (None, Some(u)) => vec![u.to_string()],
        (None, None) => Vec::new(),
    };
    for key in rest {
        consider(&mut plan, key, Some(&target_users), &mut lookup);
    }
    finish(plan)
}

fn push_merge(plan: &mut Plan, id: ProfileId) {
    if plan.target != Some(id) && !plan.merge.contains(&id) {
        plan.merge.push(id);
    }
}

/// Links or merges one more identifier. `target_users` is `None` for alias (merge freely).
fn consider(
    plan: &mut Plan,
    key: &IdKey,
    target_users: Option<&Vec<String>>,
    lookup: &mut impl FnMut(&IdKey) -> Option<Found>,
) {
    match lookup(key) {
        None => plan.link.push(key.clone()),
        Some(f) if Some(f.id) == plan.target => {}
        Some(f) => {
            let blocked = match target_users {
                None => false,
                Some(users) => users.iter().any(|u| has_other_user(&f, u)),
            };
            if blocked {
                plan.conflicts.push(key.clone());
            } else {
                push_merge(plan, f.id);
            }
        }
    }
}

fn finish(mut plan: Plan) -> Plan {
    plan.merge.sort();
    plan.merge.dedup();
    if let Some(t) = plan.target {
        plan.merge.retain(|m| *m != t);
    }
    plan
}

/// The id a profile with these identifiers has (rule 6).
pub fn canonical_id(ids: &BTreeSet<IdKey>) -> Option<ProfileId> {
    // BTreeSet order is (kind, value), and kinds are ordered by priority.
    let first = ids.iter().next()?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&first.index_key());
    Some(ProfileId(h.digest()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn ev(kind: EventKind, user: Option<&str>, anon: Option<&str>) -> Event {
        Event {
            message_id: "m".into(),
            kind,
            event: Some("X".into()),
            name: None,
            user_id: user.map(String::from),
            anonymous_id: anon.map(String::from),
            previous_id: None,
            group_id: None,
            timestamp: 0,
            received_at: 0,
            properties: Default::default(),
            traits: Default::default(),
            context: Default::default(),
            source: String::new(),
        }
    }

    struct Index(HashMap<IdKey, Found>);
    impl Index {
        fn with(entries: &[(IdKey, u64, &[&str])]) -> Self {
            Self(
                entries
                    .iter()
                    .map(|(k, id, users)| {
                        (
                            k.clone(),
                            Found {
                                id: ProfileId(*id),
                                user_ids: users.iter().map(|s| s.to_string()).collect(),
                            },
                        )
                    })
                    .collect(),
            )
        }
        fn plan(&self, e: &Event) -> Plan {
            plan(e, &[], |k| self.0.get(k).cloned())
        }
    }

    #[test]
    fn identify_links_anonymous_profile_to_new_user() {
        let idx = Index::with(&[(IdKey::anonymous("a1"), 1, &[])]);
        let p = idx.plan(&ev(EventKind::Identify, Some("u1"), Some("a1")));
        assert_eq!(p.target, None);
        assert_eq!(p.merge, vec![ProfileId(1)]);
        assert_eq!(p.link, vec![IdKey::user("u1")]);
    }

    #[test]
    fn regression_two_user_ids_are_never_merged_through_a_shared_anonymous_id() {
        // u1 signed in on a shared device (a1); now u2 signs in on the same device.
        let idx = Index::with(&[
            (IdKey::user("u1"), 1, &["u1"]),
            (IdKey::anonymous("a1"), 1, &["u1"]),
        ]);
        let p = idx.plan(&ev(EventKind::Identify, Some("u2"), Some("a1")));
        assert_eq!(p.target, None, "u2 gets a profile of their own");
        assert!(p.merge.is_empty());
        assert_eq!(p.conflicts, vec![IdKey::anonymous("a1")]);
        assert_eq!(p.link, vec![IdKey::user("u2")]);
        // Anonymous events of the device stay with the first user.
        let p = idx.plan(&ev(EventKind::Track, None, Some("a1")));
        assert_eq!(p.target, Some(ProfileId(1)));
    }

    #[test]
    fn alias_merges_explicitly_even_two_user_ids() {
        let idx = Index::with(&[
            (IdKey::user("old"), 1, &["old"]),
            (IdKey::user("new"), 2, &["new"]),
        ]);
        let mut e = ev(EventKind::Alias, Some("new"), None);
        e.previous_id = Some("old".into());
        let p = idx.plan(&e);
        assert_eq!(p.target, Some(ProfileId(2)));
        assert_eq!(p.merge, vec![ProfileId(1)]);
    }

    #[test]
    fn email_links_anonymous_visitor_to_known_user_by_email() {
        let idx = Index::with(&[(IdKey::email("ada@example.com").expect("email"), 7, &["u7"])]);
        let mut e = ev(EventKind::Identify, None, Some("a9"));
        e.traits.insert("email".into(), " Ada@Example.COM ".into());
        let p = idx.plan(&e);
        assert_eq!(p.target, Some(ProfileId(7)));
        assert_eq!(p.link, vec![IdKey::anonymous("a9")]);
    }

    #[test]
    fn canonical_id_prefers_user_ids_and_ignores_insertion_order() {
        let mut a = BTreeSet::new();
        a.insert(IdKey::anonymous("zz"));
        a.insert(IdKey::user("u1"));
        let mut b = BTreeSet::new();
        b.insert(IdKey::user("u1"));
        assert_eq!(canonical_id(&a), canonical_id(&b));
        let id = canonical_id(&a).expect("id");
        assert_eq!(id.to_string().parse::<ProfileId>(), Ok(id));
    }

    #[test]
    fn index_keys_round_trip() {
        for k in [
            IdKey::user("u\u{e9}"),
            IdKey::anonymous("a"),
            IdKey {
                kind: IdKind::Trait("phone".into()),
                value: "+49".into(),
            },
        ] {
            assert_eq!(IdKey::from_index_key(&k.index_key()), Some(k));
        }
    }
}
