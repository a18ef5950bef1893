//! Kairos product recommendations.
//!
//! # What this crate owns
//! - [`catalog`]: the catalog [`Item`] (title, category, brand, price, tags, stock, image)
//!   and its validation, with errors that name the field.
//! - [`interaction`]: which events are views, cart additions and purchases of which
//!   products, and their weights; [`Interactions`], the per-person recent history that the
//!   model is built from (appended to as events arrive, forgotten on erasure).
//! - [`knn`]: item-to-item collaborative filtering from co-views, co-carts and
//!   co-purchases (weighted by kind and recency, cosine-normalised, shrunk by support,
//!   top-K neighbours per item, computed on several threads).
//! - [`content`]: content similarity from catalog attributes (TF-IDF over category, brand,
//!   tags and price band; cosine), bounded work per item.
//! - [`model`]: [`Snapshot`], an immutable model built from interactions and the catalog
//!   (neighbour lists, popularity and trending counts), and [`Snapshot::recommend`]: the
//!   hybrid blend, cold-start fallbacks, filters (in stock, not just bought, not in the
//!   cart) and category diversity, each result with the reason it was chosen.
//! - [`eval`]: leave-last-out evaluation (HR@K, NDCG@K, coverage) of every method.
//!
//! # What it must never depend on
//! No IO, no store, no HTTP, no async, no clock (every instant is passed in), no
//! randomness: the same interactions, catalog and request give the same recommendations,
//! ties broken by item id. It depends on `kairos-core` only for the event type and the
//! event vocabulary, so that what counts as a purchase is decided in one place.

pub mod catalog;
pub mod content;
pub mod eval;
pub mod interaction;
pub mod knn;
pub mod model;

pub use catalog::Item;
pub use interaction::{Interactions, Kind};
pub use model::{Context, Method, Reason, Recommendation, RecsConfig, Request, Snapshot};

/// Errors of this crate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RecsError {
    /// Input that cannot be accepted: names the field and the reason.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

impl RecsError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
