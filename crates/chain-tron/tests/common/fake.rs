//! The TRON simulation (`tron-sim`: no TRON node can run here) as the tests use it, with a
//! client for it, and every recorded answer readable from its directory.

pub use tron_sim::*;

use chain_tron::{Config, Tron};
use serde_json::Value;

/// Every recorded java-tron answer, with its sources in the directory's README.
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/recorded");

/// Any recorded answer of [`FIXTURES`] (the simulation compiles in only those it serves).
pub fn fixture(name: &str) -> Value {
    let path = format!("{FIXTURES}/{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// Serves `ledger`; a client for it (with an API key) and the shared ledger.
pub async fn fake_node(ledger: Ledger) -> (Tron, Shared) {
    let (url, shared) = serve(ledger).await;
    let mut config = Config::new(url.parse().unwrap());
    config.api_key = Some("secret-api-key-123".into());
    (Tron::new(config).unwrap(), shared)
}
