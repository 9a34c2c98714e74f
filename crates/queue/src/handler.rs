//! What runs a job: one handler per job kind, looked up in a registry. The built-in `noop`
//! kind does nothing, for smoke tests and benchmarks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use store::JobRow;

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Failed; retried with backoff while attempts remain.
    Retry(String),
    /// Failed in a way a retry cannot fix: dead letter at once.
    Fatal(String),
    /// Not now: run again after this long, without using up an attempt.
    Snooze(Duration),
}

#[async_trait]
pub trait Handler: Send + Sync {
    async fn run(&self, job: &JobRow) -> Outcome;
}

/// The `noop` kind.
#[derive(Debug, Default)]
pub struct Noop;

#[async_trait]
impl Handler for Noop {
    async fn run(&self, _job: &JobRow) -> Outcome {
        Outcome::Done
    }
}

/// The `sleep` kind: waits `{"ms": N}` milliseconds (at most a minute), for trying out
/// draining, leases and recovery with jobs that take time.
#[derive(Debug, Default)]
pub struct Sleep;

/// Longest a `sleep` job may ask for.
pub const SLEEP_MS_MAX: u64 = 60_000;

#[async_trait]
impl Handler for Sleep {
    async fn run(&self, job: &JobRow) -> Outcome {
        match job.args.get("ms").and_then(serde_json::Value::as_u64) {
            Some(ms) if ms <= SLEEP_MS_MAX => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Outcome::Done
            }
            _ => Outcome::Fatal(format!(
                "sleep jobs need args {{\"ms\": 0..={SLEEP_MS_MAX}}}"
            )),
        }
    }
}

/// Handlers by job kind.
#[derive(Clone)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn Handler>>,
}

impl Default for Registry {
    /// A registry with the built-in `noop` and `sleep` kinds.
    fn default() -> Self {
        let mut registry = Registry {
            handlers: HashMap::new(),
        };
        registry.register("noop", Arc::new(Noop));
        registry.register("sleep", Arc::new(Sleep));
        registry
    }
}

impl Registry {
    pub fn register(&mut self, kind: &str, handler: Arc<dyn Handler>) {
        self.handlers.insert(kind.to_string(), handler);
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Handler>> {
        self.handlers.get(kind)
    }

    pub fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        kinds.sort_unstable();
        kinds
    }
}
