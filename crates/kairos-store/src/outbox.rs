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

impl Store {
    fn bump(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        row: &OutboxRow,
        metric: &str,
    ) -> Result<(), StoreError> {
        let key = stat_key(&row.campaign, &row.variant, metric);
        let (n, sum) = self
            .campaign_stats
            .get(&key)?
            .map_or((0, 0.0), |v| decode_stat(&v));
        batch.insert(&self.campaign_stats, key, encode_stat(n + 1, sum));
        Ok(())
    }

    /// A send is about to start: recorded first, so that after a crash the row says the
    /// receiver may already have it (the next attempt is flagged as a possible duplicate).
    /// Returns the row as stored.
    pub fn outbox_sending(&self, key: &[u8], row: &OutboxRow) -> Result<OutboxRow, StoreError> {
        let mut sending = row.clone();
        sending.status = "sending".into();
        self.outbox.insert(key, encode(&sending)?)?;
        self.persist()?;
        Ok(sending)
    }

    /// The receiver accepted the message: it leaves the outbox for good.
    pub fn outbox_sent(&self, key: &[u8], row: &OutboxRow, at: Millis) -> Result<(), StoreError> {
        let mut done = row.clone();
        done.status = "sent".into();
        done.attempts += 1;
        done.due = at;
        done.last_error = None;
        let mut batch = self.db.batch();
        batch.remove(&self.outbox, key.to_vec());
        batch.insert(&self.messages, done.message_id.as_bytes(), encode(&done)?);
        self.bump(&mut batch, row, "sent")?;
        batch.commit()?;
        self.persist()
    }

    /// A retryable failure: tried again at `due`.
    pub fn outbox_retry(
        &self,
        key: &[u8],
        row: &OutboxRow,
        due: Millis,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut next = row.clone();
        next.status = "failed".into();
        next.attempts += 1;
        next.due = due;
        next.last_error = Some(error.to_string());
        let mut batch = self.db.batch();
        batch.remove(&self.outbox, key.to_vec());
        batch.insert(
            &self.outbox,
            outbox_key(due, &next.message_id),
            encode(&next)?,
        );
        self.bump(&mut batch, row, "retried")?;
        batch.commit()?;
        self.persist()
    }

    /// Out of attempts, or a permanent failure: kept as a dead letter until re-driven.
    pub fn outbox_dead(
        &self,
        key: &[u8],
        row: &OutboxRow,
        at: Millis,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut dead = row.clone();
        dead.status = "dead".into();
        dead.attempts += 1;
        dead.due = at;
        dead.last_error = Some(error.to_string());
        let mut batch = self.db.batch();
        batch.remove(&self.outbox, key.to_vec());
        batch.insert(
            &self.dead_messages,
            dead.message_id.as_bytes(),
            encode(&dead)?,
        );
        self.bump(&mut batch, row, "dead")?;
        batch.commit()?;
        self.persist()
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
