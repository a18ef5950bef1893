//! Kairos core: the event model, Segment decoding and validation, identity-resolution rules,
//! and the per-profile state machine.
//!
//! This crate owns everything that decides *what* Kairos computes. It is pure and
//! deterministic: no IO, no async, no clock (every instant is passed in), no randomness.
//! It must never depend on the store, the server, or any runtime crate; those are adapters
//! around it. Replaying the same events through it gives the same profiles, byte for byte.

pub mod bits;
pub mod campaign;
mod compact;
pub mod counter;
pub mod defaults;
pub mod event;
pub mod features;
pub mod identity;
pub mod predict;
pub mod profile;
pub mod rules_env;
pub mod scoring;
pub mod segment;
pub mod sendtime;
pub mod state;
pub mod stored_json;
pub mod time;
pub mod vecmap;
pub mod vocab;

pub use event::{Event, EventKind};
pub use identity::{IdKey, IdKind, ProfileId};
pub use profile::{CoreConfig, Profile};
pub use scoring::{Change, ChangeKind, Definitions, Derived, ScoreDef, Scoring, SegmentDef};
pub use state::ProfileState;
pub use time::Millis;
