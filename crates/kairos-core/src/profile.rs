//! A profile: one person's identifiers and derived state, and its stored encoding.

use crate::event::Event;
use crate::identity::{IdKey, IdKind, ProfileId};
use crate::state::ProfileState;
use crate::time::Millis;
use crate::vocab::Vocabulary;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// What the core needs to know from configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CoreConfig {
    /// Identify traits that identify a person, besides email (e.g. `phone`, `crm_id`).
    pub identity_traits: Vec<String>,
    pub vocabulary: Vocabulary,
}

/// Bumped when the encoding changes; state can always be rebuilt from events.
const ENCODING_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("profile encoding version {0} is not supported")]
    Version(u8),
    #[error("profile bytes are corrupt: {0}")]
    Corrupt(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub id: ProfileId,
    pub identifiers: BTreeSet<IdKey>,
    pub state: ProfileState,
}

impl Profile {
    pub fn new(id: ProfileId) -> Self {
        Self {
            id,
            identifiers: BTreeSet::new(),
            state: ProfileState::default(),
        }
    }

    pub fn user_ids(&self) -> Vec<String> {
        self.ids_of(&IdKind::User)
    }

    pub fn ids_of(&self, kind: &IdKind) -> Vec<String> {
        self.identifiers
            .iter()
            .filter(|k| &k.kind == kind)
            .map(|k| k.value.clone())
            .collect()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![ENCODING_VERSION];
        // Serialising plain data into a Vec cannot fail.
        if let Ok(body) = postcard::to_allocvec(self) {
            out.extend_from_slice(&body);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        match bytes.split_first() {
            Some((&ENCODING_VERSION, body)) => {
                postcard::from_bytes(body).map_err(|e| DecodeError::Corrupt(e.to_string()))
            }
            Some((&v, _)) => Err(DecodeError::Version(v)),
            None => Err(DecodeError::Corrupt("empty".into())),
        }
    }

    /// Rebuilds the state from scratch by replaying events in event-time order.
    pub fn rebuild(&mut self, events: &mut [Event], cfg: &CoreConfig) {
        events.sort_by_key(Event::order_key);
        self.state = ProfileState::default();
        for ev in events.iter() {
            self.state.apply(ev, &cfg.vocabulary);
        }
    }

    /// The profile as the API shows it.
    pub fn view(&self, now: Millis) -> Value {
        let mut ids = serde_json::Map::new();
        for kind in [IdKind::User, IdKind::Anonymous, IdKind::Email] {
            ids.insert(kind.label(), json!(self.ids_of(&kind)));
        }
        for k in &self.identifiers {
            if let IdKind::Trait(_) = k.kind {
                if let Some(list) = ids
                    .entry(k.kind.label())
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                {
                    list.push(json!(k.value));
                }
            }
        }
        json!({
            "id": self.id.to_string(),
            "identifiers": ids,
            "state": self.state.view(now),
        })
    }
}
