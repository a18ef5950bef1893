//! Kairos storage: the fjall keyspaces and their key layout, the single writer with group
//! commit (one batch and one fsync for everything queued meanwhile), merges, erasure and
//! recovery.
//!
//! It owns durability and identity bookkeeping; what a profile *means* comes from
//! `kairos-core`, which it calls. It must never depend on HTTP, async runtimes (beyond a
//! oneshot channel to answer callers) or the server crate.

pub mod catalog;
mod dedupe;
pub mod events;
pub mod keys;
pub mod models;
mod outbox;
pub use outbox::Delivered;
mod probe;
mod sorted_batch;
pub mod store;
pub mod writer;

pub use store::{
    outbox_key, BackgroundWork, Counts, DeadLetter, EventParts, LogPage, OutboxRow, Store,
    StoreOptions, StoredEvent,
};
pub use writer::{
    Accepted, Backfill, BackfillHook, Clock, Erased, Ingestor, Observer, Outcome, PauseGuard,
    Prepared, QueueFull, Submission, TimerLateness, WriterOptions,
};

/// Errors of the store.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("storage engine: {0}")]
    Engine(String),
    #[error("io: {0}")]
    Io(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the writer has stopped")]
    WriterStopped,
    /// The data directory was written in a format this version does not read.
    #[error("unsupported store format: {0}")]
    Format(String),
    /// A thing the caller named does not exist (a model version, say).
    #[error("not found: {0}")]
    NotFound(String),
}

impl StoreError {
    pub(crate) fn corrupt(what: &str) -> Self {
        Self::Corrupt(what.to_string())
    }
}

impl From<fjall::Error> for StoreError {
    fn from(e: fjall::Error) -> Self {
        Self::Engine(e.to_string())
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e.to_string())
    }
}
