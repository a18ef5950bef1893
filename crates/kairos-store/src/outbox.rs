//! The outbox after the writer: what the delivery worker records about each message.
//!
//! The writer inserts a row (status `scheduled`) in the same group commit as the decision
//! that queued it. One delivery worker then owns the rows: it marks a row `sending` before
//! an attempt, moves it to `messages` when
//! the receiver accepted it (`sent`), re-keys it to a later due time after a retryable
//! failure (`failed`, attempts + 1), or moves it to `dead` after the last attempt or a
//! permanent failure, from where it can be re-driven. Each transition is one batch and one
//! fsync, so after a crash a message is either still due (and is sent again with the same
//! idempotency key: at least once) or recorded as sent (and never sent again).
//!
//! Delivery counters (`sent`, `retried`, `dead`) go to the same report keyspace as the
//! writer's but under metric names the writer never writes, so the two never race.

use crate::store::{decode_stat, encode_stat, outbox_key, stat_key, OutboxRow, Store};
use crate::StoreError;
use kairos_core::Millis;

fn encode(row: &OutboxRow) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(row).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode(v: &[u8]) -> Result<OutboxRow, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt(format!("outbox row: {e}")))
}

/// What became of one delivery attempt (see [`Store::outbox_record`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Delivered {
    /// The receiver accepted it at this instant.
    Sent { at: Millis },
    /// A retryable failure: tried again at `due`; `uncertain`: the receiver may have it.
    Retry {
        due: Millis,
        error: String,
        uncertain: bool,
    },
    /// Out of attempts, or a permanent failure.
    Dead { at: Millis, error: String },
}

impl Store {
    /// Sends are about to start: recorded first (one fsync for all), so that after a crash
    /// a row says the receiver may already have it (the next attempt is flagged as a
    /// possible duplicate).
    pub fn outbox_sending(&self, rows: &[(Vec<u8>, OutboxRow)]) -> Result<(), StoreError> {
        let mut batch = self.db.batch();
        for (key, row) in rows {
            let mut sending = row.clone();
            sending.status = "sending".into();
            batch.insert(&self.outbox, key.clone(), encode(&sending)?);
        }
        batch.commit()?;
        self.persist()
    }

    /// Records attempts, one batch and one fsync for all: a sent message leaves the outbox
    /// for good, a retry is re-keyed to its new due time with the attempt counted, a dead one
    /// moves to the dead letters until re-driven. Delivery counters (`sent`, `retried`,
    /// `dead`) are updated with them.
    pub fn outbox_record(
        &self,
        items: &[(Vec<u8>, OutboxRow, Delivered)],
    ) -> Result<(), StoreError> {
        let mut batch = self.db.batch();
        let mut counts: std::collections::BTreeMap<Vec<u8>, u64> = Default::default();
        for (key, row, outcome) in items {
            let mut next = row.clone();
            next.attempts += 1;
            batch.remove(&self.outbox, key.clone());
            let metric = match outcome {
                Delivered::Sent { at } => {
                    next.status = "sent".into();
                    next.uncertain = false;
                    next.due = *at;
                    next.last_error = None;
                    batch.insert(&self.messages, next.message_id.as_bytes(), encode(&next)?);
                    "sent"
                }
                Delivered::Retry {
                    due,
                    error,
                    uncertain,
                } => {
                    next.status = "failed".into();
                    next.uncertain = *uncertain;
                    next.due = *due;
                    next.last_error = Some(error.clone());
                    batch.insert(
                        &self.outbox,
                        outbox_key(*due, &next.message_id),
                        encode(&next)?,
                    );
                    "retried"
                }
                Delivered::Dead { at, error } => {
                    next.status = "dead".into();
                    next.due = *at;
                    next.last_error = Some(error.clone());
                    batch.insert(
                        &self.dead_messages,
                        next.message_id.as_bytes(),
                        encode(&next)?,
                    );
                    "dead"
                }
            };
            *counts
                .entry(stat_key(&row.campaign, &row.variant, metric))
                .or_default() += 1;
        }
        for (key, n) in counts {
            let (had, sum) = self
                .campaign_stats
                .get(&key)?
                .map_or((0, 0.0), |v| decode_stat(&v));
            batch.insert(&self.campaign_stats, key, encode_stat(had + n, sum));
        }
        batch.commit()?;
        self.persist()
    }

    /// One message accepted by the receiver (see [`Store::outbox_record`]).
    pub fn outbox_sent(&self, key: &[u8], row: &OutboxRow, at: Millis) -> Result<(), StoreError> {
        self.outbox_record(&[(key.to_vec(), row.clone(), Delivered::Sent { at })])
    }

    /// One retryable failure: tried again at `due`.
    pub fn outbox_retry(
        &self,
        key: &[u8],
        row: &OutboxRow,
        due: Millis,
        error: &str,
    ) -> Result<(), StoreError> {
        let error = error.to_string();
        let retry = Delivered::Retry {
            due,
            error,
            uncertain: false,
        };
        self.outbox_record(&[(key.to_vec(), row.clone(), retry)])
    }

    /// One dead letter.
    pub fn outbox_dead(
        &self,
        key: &[u8],
        row: &OutboxRow,
        at: Millis,
        error: &str,
    ) -> Result<(), StoreError> {
        let error = error.to_string();
        self.outbox_record(&[(key.to_vec(), row.clone(), Delivered::Dead { at, error })])
    }

    /// Puts a dead message back in the outbox, due at `now`, with its attempts reset.
    /// Returns false when there is no such dead message.
    pub fn redrive(&self, message_id: &str, now: Millis) -> Result<bool, StoreError> {
        let Some(v) = self.dead_messages.get(message_id.as_bytes())? else {
            return Ok(false);
        };
        let mut row = decode(&v)?;
        row.status = "scheduled".into();
        row.attempts = 0;
        row.due = now;
        let mut batch = self.db.batch();
        batch.remove(&self.dead_messages, message_id.as_bytes());
        batch.insert(&self.outbox, outbox_key(now, message_id), encode(&row)?);
        batch.commit()?;
        self.persist()?;
        Ok(true)
    }

    /// Dead messages in message id order after `after`.
    pub fn dead_messages(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let mut out = Vec::new();
        let start = after.map(|a| {
            let mut k = a.as_bytes().to_vec();
            k.push(0);
            k
        });
        let iter: Box<dyn Iterator<Item = fjall::Guard>> = match start {
            Some(s) => Box::new(self.dead_messages.range(s..)),
            None => Box::new(self.dead_messages.iter()),
        };
        for guard in iter {
            let (_, v) = guard.into_inner()?;
            out.push(decode(&v)?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Where a message is: due in the outbox, sent, or dead.
    pub fn message(&self, message_id: &str) -> Result<Option<OutboxRow>, StoreError> {
        if let Some(v) = self.messages.get(message_id.as_bytes())? {
            return Ok(Some(decode(&v)?));
        }
        if let Some(v) = self.dead_messages.get(message_id.as_bytes())? {
            return Ok(Some(decode(&v)?));
        }
        for guard in self.outbox.iter() {
            let (k, v) = guard.into_inner()?;
            if k.get(8..) == Some(message_id.as_bytes()) {
                return Ok(Some(decode(&v)?));
            }
        }
        Ok(None)
    }

    /// Rows still in the outbox (due or waiting for a retry), oldest due first.
    pub fn pending_messages(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let mut out = Vec::new();
        for guard in self.outbox.iter() {
            let (_, v) = guard.into_inner()?;
            out.push(decode(&v)?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Removes sent-message records older than `before` (they hold addresses; the report
    /// counters stay). Returns how many.
    pub fn prune_sent(&self, before: Millis) -> Result<u64, StoreError> {
        let mut batch = self.db.batch();
        let mut n = 0;
        for guard in self.messages.iter() {
            let (k, v) = guard.into_inner()?;
            if decode(&v).is_ok_and(|r| r.due < before) {
                batch.remove(&self.messages, k);
                n += 1;
            }
        }
        batch.commit()?;
        self.persist()?;
        Ok(n)
    }
}

/// For the writer's erasure: every outbox, sent and dead row of these profiles.
pub(crate) fn rows_of(
    store: &Store,
    profiles: &[u64],
) -> Result<Vec<(fjall::Keyspace, Vec<u8>)>, StoreError> {
    let mut out = Vec::new();
    for ks in [&store.outbox, &store.messages, &store.dead_messages] {
        for guard in ks.iter() {
            let (k, v) = guard.into_inner()?;
            if decode(&v).is_ok_and(|r| profiles.contains(&r.profile)) {
                out.push((ks.clone(), k.to_vec()));
            }
        }
    }
    Ok(out)
}
