//! Trained models, versioned: each version's bytes (the model crate's serialised form) and
//! metadata (metrics, training window, feature names), and which version is active per
//! model name. Activating, rolling back and listing are single durable writes; the bytes
//! are opaque here.

use crate::keys::{name_prefix, named_key, named_key_tail, read_u64};
use crate::store::Store;
use crate::StoreError;
use serde_json::Value;

const ACTIVE_PREFIX: &str = "active:";
const STATUS_PREFIX: &str = "model_status:";
const ONLINE_PREFIX: &str = "model_online:";

/// One stored version of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelVersion {
    pub name: String,
    pub version: u64,
    pub meta: Value,
    pub bytes: Vec<u8>,
}

impl Store {
    /// Stores a new version of model `name` (one more than the newest) and returns its
    /// number. It is not active until [`Store::activate_model`].
    pub fn put_model(&self, name: &str, meta: &Value, bytes: &[u8]) -> Result<u64, StoreError> {
        let version = self.model_versions(name)?.last().map_or(1, |v| v + 1);
        let meta = serde_json::to_vec(meta).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // Value: meta length, meta, bytes.
        let mut value = Vec::with_capacity(8 + meta.len() + bytes.len());
        value.extend_from_slice(&(meta.len() as u64).to_be_bytes());
        value.extend_from_slice(&meta);
        value.extend_from_slice(bytes);
        self.models.insert(named_key(name, version), value)?;
        self.persist()?;
        Ok(version)
    }

    /// Version numbers of model `name`, oldest first.
    pub fn model_versions(&self, name: &str) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::new();
        for guard in self.models.prefix(name_prefix(name)) {
            let k = guard.key()?;
            if let Some(v) = named_key_tail(&k) {
                out.push(v);
            }
        }
        Ok(out)
    }

    pub fn model(&self, name: &str, version: u64) -> Result<Option<ModelVersion>, StoreError> {
        let Some(v) = self.models.get(named_key(name, version))? else {
            return Ok(None);
        };
        let len = v
            .get(..8)
            .and_then(read_u64)
            .ok_or(StoreError::corrupt("model"))? as usize;
        let meta = v.get(8..8 + len).ok_or(StoreError::corrupt("model meta"))?;
        let meta = serde_json::from_slice(meta)
            .map_err(|e| StoreError::Corrupt(format!("model meta: {e}")))?;
        Ok(Some(ModelVersion {
            name: name.to_string(),
            version,
            meta,
            bytes: v.get(8 + len..).unwrap_or_default().to_vec(),
        }))
    }

    /// Makes `version` the one that scores; returns the previously active version.
    pub fn activate_model(&self, name: &str, version: u64) -> Result<Option<u64>, StoreError> {
        if self.models.get(named_key(name, version))?.is_none() {
            return Err(StoreError::NotFound(format!(
                "model {name} has no version {version}"
            )));
        }
        let previous = self.active_model(name)?;
        self.meta.insert(
            format!("{ACTIVE_PREFIX}{name}").as_bytes(),
            version.to_be_bytes(),
        )?;
        self.persist()?;
        Ok(previous)
    }

    pub fn active_model(&self, name: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .meta
            .get(format!("{ACTIVE_PREFIX}{name}").as_bytes())?
            .and_then(|v| read_u64(&v)))
    }

    /// Activates the newest version older than the active one; returns it, or `None` when
    /// there is nothing older to go back to.
    pub fn rollback_model(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let Some(active) = self.active_model(name)? else {
            return Ok(None);
        };
        let Some(older) = self
            .model_versions(name)?
            .into_iter()
            .filter(|v| *v < active)
            .max()
        else {
            return Ok(None);
        };
        self.activate_model(name, older)?;
        Ok(Some(older))
    }

    /// Names of every stored model, sorted.
    pub fn model_names(&self) -> Result<Vec<String>, StoreError> {
        let mut out: Vec<String> = Vec::new();
        for guard in self.models.iter() {
            let k = guard.key()?;
            let Some(name) = k.len().checked_sub(9).and_then(|n| k.get(..n)) else {
                continue;
            };
            let name = String::from_utf8_lossy(name).into_owned();
            if out.last() != Some(&name) {
                out.push(name);
            }
        }
        Ok(out)
    }

    /// Stops serving model `name`; returns the version that was active.
    pub fn deactivate_model(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let previous = self.active_model(name)?;
        self.meta
            .remove(format!("{ACTIVE_PREFIX}{name}").as_bytes())?;
        self.persist()?;
        Ok(previous)
    }

    /// Saves the monitoring status of a served model (drift, matured-label metrics), so a
    /// scheduled `kairos train --if-drifted` can read it.
    pub fn put_model_status(&self, name: &str, status: &Value) -> Result<(), StoreError> {
        let v = serde_json::to_vec(status).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.meta
            .insert(format!("{STATUS_PREFIX}{name}").as_bytes(), v)?;
        self.persist()
    }

    pub fn model_status(&self, name: &str) -> Result<Option<Value>, StoreError> {
        match self.meta.get(format!("{STATUS_PREFIX}{name}").as_bytes())? {
            Some(v) => {
                Ok(Some(serde_json::from_slice(&v).map_err(|e| {
                    StoreError::Corrupt(format!("model status: {e}"))
                })?))
            }
            None => Ok(None),
        }
    }

    /// Saves the state an online learner reached on top of `version` (it keeps learning
    /// from maturing labels between retrains; a restart resumes from here).
    pub fn put_model_online(
        &self,
        name: &str,
        version: u64,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let mut key = format!("{ONLINE_PREFIX}{name}").into_bytes();
        key.push(0);
        key.extend_from_slice(&version.to_be_bytes());
        self.meta.insert(key, bytes)?;
        self.persist()
    }

    pub fn model_online(&self, name: &str, version: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let mut key = format!("{ONLINE_PREFIX}{name}").into_bytes();
        key.push(0);
        key.extend_from_slice(&version.to_be_bytes());
        Ok(self.meta.get(key)?.map(|v| v.to_vec()))
    }
}
