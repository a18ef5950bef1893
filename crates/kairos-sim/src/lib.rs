//! kairos-sim: a deterministic synthetic e-commerce shop (catalog, people with latent purchase
//! intent, home time zones and preferred hours, email engagement including privacy-proxy
//! machine opens), its ground truth, and the sinks that feed it to Kairos: Segment JSONL files
//! and the public HTTP API (`kairos simulate`).
//!
//! It must never depend on another Kairos crate: it talks to Kairos only as any customer's
//! tracker would, through `/v1/batch` or files, so it tests the real surface.

pub mod model;
pub mod send;

pub use model::{PersonTruth, Product, SimConfig, SimEvent, Simulation};
pub use send::{run, SimSummary, SimulateArgs};
