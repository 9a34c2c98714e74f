//! `GET /api/admin/events`: server-sent events for dashboards and tools.
//!
//! One change feed per process (a Postgres LISTEN connection, or SQLite's data-version
//! check) is shared by every stream through [`EventHub`]; the number of streams is capped so
//! dashboards cannot take the database pool from the API. The dashboard's live pages have
//! slots of their own ([`EventHub::open_dashboard_stream`]), so they never take the API's; one
//! token holds at most [`EVENT_STREAMS_PER_TOKEN_MAX`] streams of both kinds together (429
//! naming the token beyond), so one client cannot take them all. Each stream sends a `snapshot`
//! first, then `worker` when a worker's status or desired state changes (Postgres NOTIFY), a
//! fresh `snapshot` when the store cannot say what changed (SQLite; at most every 250 ms), and
//! once a second `heartbeats`, `queues` (when counts moved), `audit` (new entries) and
//! `job_failed` (`audit_gap` when over 1,000 entries came in a second), and `withdrawal` (the
//! withdrawal as `GET /api/v1/withdrawals/{id}` shows it, once per withdrawal whose audit trail
//! grew since the last poll: every create and every move of state is audited, so none is
//! missed; at most [`WITHDRAWAL_EVENTS_PER_POLL_MAX`] a poll, the most recently changed). A stream whose token is revoked ends within a second; when the database is
//! away the stream says so with an `error` event and carries on.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use store::{AuditList, Change, Store, WorkerList};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio::task::JoinHandle;

use domain::limits::{
    DASHBOARD_STREAMS_MAX, DASHBOARD_STREAMS_PER_SESSION_MAX, EVENT_STREAMS_PER_TOKEN_MAX,
};

use crate::AppState;
use crate::api::{ApiError, Caller};

/// Event streams open at once per process; more get 503.
pub const EVENT_STREAMS_MAX: usize = 32;
/// Changes buffered per stream before it falls behind (and gets a snapshot instead).
const CHANGE_BUFFER: usize = 1024;
/// Withdrawals sent per poll at most (the most recently changed; their `audit` events still
/// name every move of the others).
pub const WITHDRAWAL_EVENTS_PER_POLL_MAX: usize = 100;

/// The process's one change feed, fanned out to every open stream.
pub(crate) struct EventHub {
    store: Store,
    sender: broadcast::Sender<Change>,
    forwarder: Mutex<Option<JoinHandle<()>>>,
    /// Slots for the API's open event streams.
    pub(crate) streams: Arc<Semaphore>,
    /// Slots for the dashboard's live pages, apart from the API's.
    pub(crate) dashboard_streams: Arc<Semaphore>,
    /// Live pages open per dashboard session (by the session's stored hash).
    per_session: Mutex<HashMap<String, usize>>,
    /// Streams open per token (API streams and its sessions' live pages together).
    per_token: Mutex<HashMap<i64, usize>>,
}

/// One open stream of a token; frees its place when the stream ends.
pub(crate) struct TokenStream {
    hub: Arc<EventHub>,
    token: i64,
}

impl Drop for TokenStream {
    fn drop(&mut self) {
        let mut open = self
            .hub
            .per_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.token) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.token);
            }
        }
    }
}

/// One open live page of a session; frees its place when the stream ends.
pub(crate) struct SessionStream {
    hub: Arc<EventHub>,
    session: String,
    _slot: OwnedSemaphorePermit,
}

impl Drop for SessionStream {
    fn drop(&mut self) {
        let mut open = self
            .hub
            .per_session
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.session) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.session);
            }
        }
    }
}

/// Why a live page could not open.
pub(crate) enum StreamRefusal {
    /// Every dashboard stream slot of the process is taken.
    Full,
    /// The session has [`DASHBOARD_STREAMS_PER_SESSION_MAX`] pages open already.
    SessionFull,
}

impl EventHub {
    pub(crate) fn new(store: Store) -> Arc<EventHub> {
        Arc::new(EventHub {
            store,
            sender: broadcast::channel(CHANGE_BUFFER).0,
            forwarder: Mutex::new(None),
            streams: Arc::new(Semaphore::new(EVENT_STREAMS_MAX)),
            dashboard_streams: Arc::new(Semaphore::new(DASHBOARD_STREAMS_MAX)),
            per_session: Mutex::default(),
            per_token: Mutex::default(),
        })
    }

    /// A place for one more stream of `token`, within [`EVENT_STREAMS_PER_TOKEN_MAX`]: below
    /// the process's caps, so one client cannot hold every slot and starve the operators.
    pub(crate) fn open_token_stream(
        self: &Arc<Self>,
        token: &store::ApiTokenRow,
    ) -> Result<TokenStream, ApiError> {
        let mut open = self
            .per_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(token.id).or_insert(0);
        if *count >= EVENT_STREAMS_PER_TOKEN_MAX {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "the token {} ({:?}) holds {EVENT_STREAMS_PER_TOKEN_MAX} event streams already, the most one token may; close one of them",
                    token.prefix, token.name
                ),
            ));
        }
        *count += 1;
        Ok(TokenStream {
            hub: Arc::clone(self),
            token: token.id,
        })
    }

    /// A place for one more live page of `session` (its stored hash), within the session's
    /// and the process's limits.
    pub(crate) fn open_dashboard_stream(
        self: &Arc<Self>,
        session: &str,
    ) -> Result<SessionStream, StreamRefusal> {
        let mut open = self
            .per_session
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = open.get(session).copied().unwrap_or(0);
        if count >= DASHBOARD_STREAMS_PER_SESSION_MAX {
            return Err(StreamRefusal::SessionFull);
        }
        let slot = Arc::clone(&self.dashboard_streams)
            .try_acquire_owned()
            .map_err(|_| StreamRefusal::Full)?;
        open.insert(session.to_string(), count + 1);
        Ok(SessionStream {
            hub: Arc::clone(self),
            session: session.to_string(),
            _slot: slot,
        })
    }

    fn running(&self) -> bool {
        self.forwarder
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|task| !task.is_finished())
    }

    /// A receiver of every change from now on: the feed is listening when this returns.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
    ) -> Result<broadcast::Receiver<Change>, ApiError> {
        let receiver = self.sender.subscribe();
        if !self.running() {
            let feed = self.store.change_feed().await?;
            let mut forwarder = self
                .forwarder
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if forwarder.as_ref().is_none_or(JoinHandle::is_finished) {
                *forwarder = Some(tokio::spawn(forward(Arc::clone(self), feed)));
            }
        }
        Ok(receiver)
    }
}

/// Passes the feed's changes on until nobody listens or the store closes.
async fn forward(hub: Arc<EventHub>, mut feed: store::ChangeFeed) {
    while let Some(change) = feed.next().await {
        if hub.sender.send(change).is_err() {
            let mut forwarder = hub.forwarder.lock().unwrap_or_else(PoisonError::into_inner);
            if hub.sender.receiver_count() == 0 {
                *forwarder = None;
                return;
            }
        }
    }
    *hub.forwarder.lock().unwrap_or_else(PoisonError::into_inner) = None;
}

/// Workers and queues as they are now: the first event of every stream, and what a client
/// that reconnects gets instead of replaying (`Last-Event-ID` is not kept server-side).
async fn snapshot(state: &AppState) -> Result<Value, ApiError> {
    let workers = state
        .store
        .worker_list(&WorkerList {
            limit: domain::limits::LIST_LIMIT_MAX,
            ..Default::default()
        })
        .await?;
    let now = Utc::now();
    let queues = state.queue.stats(now).await?;
    Ok(json!({
        "workers": workers.iter().map(|row| crate::dto::worker(row, now)).collect::<Vec<_>>(),
        "queues": queues.iter().map(|queue| crate::dto::queue(queue, now)).collect::<Vec<_>>(),
    }))
}

/// How often an event stream looks for what has no notification: heartbeats, queue stats,
/// new audit entries, failed jobs.
const EVENT_POLL: std::time::Duration = std::time::Duration::from_secs(1);
/// Shortest gap between two snapshots sent because the store said "something changed".
const SNAPSHOT_DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(250);

type SseEvent = Event;

/// What one event stream has already told its client.
struct EventCursor {
    state: AppState,
    caller: Caller,
    changes: broadcast::Receiver<Change>,
    /// Held while the stream is open: one of the process's stream slots.
    _slot: OwnedSemaphorePermit,
    /// Held while the stream is open: one of its token's stream slots.
    _token_slot: TokenStream,
    pending: VecDeque<SseEvent>,
    /// The stream ends once `pending` is sent (the token was revoked).
    closing: bool,
    /// The last poll failed; the next success says so again.
    failing: bool,
    seq: u64,
    poll: tokio::time::Interval,
    debounce: tokio::time::Interval,
    /// The store reported a change it could not name (SQLite, a Postgres reconnect).
    dirty: bool,
    heartbeats: HashMap<String, Option<DateTime<Utc>>>,
    queues: Value,
    last_audit_id: i64,
    /// The failed jobs already reported that are still among the newest failures.
    failures_seen: HashSet<i64>,
}

impl EventCursor {
    fn push(&mut self, kind: &str, data: &Value) {
        self.seq += 1;
        self.pending.push_back(
            SseEvent::default()
                .event(kind)
                .id(self.seq.to_string())
                .data(data.to_string()),
        );
    }

    /// Sends the full picture. The first one is also the baseline the polls compare with;
    /// later ones leave it alone, so a heartbeat or queue change is always reported as such,
    /// whether or not a snapshot went out in between.
    async fn snapshot(&mut self, baseline: bool) -> Result<(), ApiError> {
        let snapshot = snapshot(&self.state).await?;
        if !baseline {
            self.push("snapshot", &snapshot);
            return Ok(());
        }
        self.heartbeats = snapshot["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|worker| {
                let id = worker["id"].as_str().unwrap_or_default().to_string();
                let at = worker["last_heartbeat"]
                    .as_str()
                    .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
                    .map(|at| at.with_timezone(&Utc));
                (id, at)
            })
            .collect();
        self.queues = snapshot["queues"].clone();
        self.push("snapshot", &snapshot);
        Ok(())
    }

    /// Everything that changed without a notification since the last poll.
    async fn poll(&mut self) -> Result<(), ApiError> {
        if !self.caller.still_valid(&self.state).await? {
            self.push(
                "error",
                &json!({"code": "unauthorized", "message": "the token was revoked"}),
            );
            self.closing = true;
            return Ok(());
        }
        let now = Utc::now();
        let workers = self
            .state
            .store
            .worker_list(&WorkerList {
                limit: domain::limits::LIST_LIMIT_MAX,
                ..Default::default()
            })
            .await?;
        let mut beats = Vec::new();
        for row in &workers {
            let previous = self
                .heartbeats
                .insert(row.id.as_str().to_string(), row.last_heartbeat);
            if previous != Some(row.last_heartbeat) {
                beats.push(crate::dto::worker(row, now));
            }
        }
        if !beats.is_empty() {
            self.push("heartbeats", &json!({"workers": beats}));
        }
        let queues: Value = self
            .state
            .queue
            .stats(now)
            .await?
            .iter()
            .map(|queue| crate::dto::queue(queue, now))
            .collect();
        if strip_ages(&queues) != strip_ages(&self.queues) {
            self.push("queues", &json!({"queues": queues}));
        }
        self.queues = queues;
        // New audit entries, oldest first; paged back to the last one sent (at most 1,000 a
        // second: beyond that the client is told to reload).
        let mut fresh = Vec::new();
        let mut before_id = None;
        loop {
            let page = self
                .state
                .store
                .audit_list(&AuditList {
                    before_id,
                    limit: 100,
                    ..Default::default()
                })
                .await?;
            let reached =
                page.len() < 100 || page.iter().any(|entry| entry.id <= self.last_audit_id);
            before_id = page.last().map(|entry| entry.id);
            fresh.extend(
                page.into_iter()
                    .filter(|entry| entry.id > self.last_audit_id),
            );
            if reached {
                break;
            }
            if fresh.len() >= 1_000 {
                // Older ones are skipped; the client can page `GET /api/admin/audit`.
                self.push(
                    "audit_gap",
                    &json!({"message": "more than 1,000 audit entries in a second; older ones were skipped"}),
                );
                break;
            }
        }
        // Read before anything is sent: if the database fails here, the next poll sends these
        // audit entries and withdrawals again rather than skipping the withdrawals.
        let mut withdrawals = Vec::new();
        for id in changed_withdrawals(&fresh).into_iter().rev() {
            // Gone between the audit entry and now: nothing to show.
            if let Some(row) = self.state.store.withdrawal_get(id).await? {
                withdrawals.push(crate::withdrawals::dto(&row, &self.state.options.intake));
            }
        }
        for entry in fresh.iter().rev() {
            self.push("audit", &crate::dto::audit(entry));
        }
        if let Some(newest) = fresh.first() {
            self.last_audit_id = self.last_audit_id.max(newest.id);
        }
        for withdrawal in &withdrawals {
            self.push("withdrawal", withdrawal);
        }
        let failed = self
            .state
            .queue
            .list(&store::JobList {
                state: Some(domain::JobState::Failed),
                limit: 50,
                ..Default::default()
            })
            .await?;
        for job in failed.iter().rev() {
            if !self.failures_seen.contains(&job.id) {
                self.push("job_failed", &crate::dto::job(job));
            }
        }
        self.failures_seen = failed.iter().map(|job| job.id).collect();
        Ok(())
    }
}

/// The withdrawals that new audit entries (newest first) say were created or moved, each
/// once, the most recently changed first, at most [`WITHDRAWAL_EVENTS_PER_POLL_MAX`].
fn changed_withdrawals(fresh: &[store::AuditRow]) -> Vec<i64> {
    let mut ids = Vec::new();
    for entry in fresh {
        if ids.len() == WITHDRAWAL_EVENTS_PER_POLL_MAX {
            break;
        }
        let id = entry
            .action
            .starts_with("withdrawal.")
            .then(|| entry.target.strip_prefix("withdrawal:"))
            .flatten()
            .and_then(|id| id.parse::<i64>().ok());
        if let Some(id) = id
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    }
    ids
}

/// Queue stats without the ages that change every millisecond, to tell a real change.
fn strip_ages(queues: &Value) -> Value {
    let mut queues = queues.clone();
    if let Some(array) = queues.as_array_mut() {
        for queue in array {
            if let Some(object) = queue.as_object_mut() {
                object.remove("oldest_available_age_ms");
            }
        }
    }
    queues
}

/// `GET /api/admin/events` (see the module's documentation).
pub(crate) async fn events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<
    Sse<impl futures_util::Stream<Item = Result<SseEvent, std::convert::Infallible>>>,
    ApiError,
> {
    use tokio::time::MissedTickBehavior;
    let token_slot = state.events.open_token_stream(&caller.token)?;
    let slot = Arc::clone(&state.events.streams)
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!(
                    "{EVENT_STREAMS_MAX} event streams are open already; close one or try later"
                ),
            )
        })?;
    // Subscribe before the snapshot, so no change between the two is missed.
    let changes = state.events.subscribe().await?;
    let mut poll = tokio::time::interval(EVENT_POLL);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut debounce = tokio::time::interval(SNAPSHOT_DEBOUNCE);
    debounce.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let audit_head = state
        .store
        .audit_list(&AuditList {
            limit: 1,
            ..Default::default()
        })
        .await?;
    let failed_head = state
        .queue
        .list(&store::JobList {
            state: Some(domain::JobState::Failed),
            limit: 50,
            ..Default::default()
        })
        .await?;
    let mut cursor = EventCursor {
        state,
        caller,
        changes,
        _slot: slot,
        _token_slot: token_slot,
        pending: VecDeque::new(),
        closing: false,
        failing: false,
        seq: 0,
        poll,
        debounce,
        dirty: false,
        heartbeats: HashMap::new(),
        queues: Value::Null,
        last_audit_id: audit_head.first().map_or(0, |entry| entry.id),
        failures_seen: failed_head.iter().map(|job| job.id).collect(),
    };
    cursor.snapshot(true).await?;
    let stream = futures_util::stream::unfold(cursor, |mut cursor| async move {
        loop {
            if let Some(event) = cursor.pending.pop_front() {
                return Some((Ok(event), cursor));
            }
            if cursor.closing {
                return None;
            }
            let outcome = tokio::select! {
                // The server is shutting down: end, so it need not wait for this client.
                () = cursor.state.shutdown.cancelled() => return None,
                change = cursor.changes.recv() => match change {
                    Ok(Change::Worker(id)) => match cursor.state.store.worker_get(&id).await {
                        Ok(Some(row)) => {
                            cursor.heartbeats.insert(row.id.as_str().to_string(), row.last_heartbeat);
                            cursor.push("worker", &crate::dto::worker(&row, Utc::now()));
                            Ok(())
                        }
                        Ok(None) => Ok(()),
                        Err(error) => Err(ApiError::from(error)),
                    },
                    // Enqueues: the next poll shows the queue's new counts.
                    Ok(Change::Job(_)) => Ok(()),
                    // The store could not say what changed, or this stream fell behind.
                    Ok(Change::Unknown) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        cursor.dirty = true;
                        Ok(())
                    }
                    // The store closed: the server is going away.
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = cursor.debounce.tick(), if cursor.dirty => {
                    cursor.dirty = false;
                    cursor.snapshot(false).await
                }
                _ = cursor.poll.tick() => cursor.poll().await,
            };
            match outcome {
                Ok(()) if cursor.failing => {
                    cursor.failing = false;
                    cursor.dirty = true;
                }
                Ok(()) => {}
                Err(error) => {
                    // The database is away: say so once, keep the stream, try again next tick.
                    tracing::debug!(?error, "event stream: could not read the store");
                    if !cursor.failing {
                        cursor.failing = true;
                        cursor.push(
                            "error",
                            &json!({"code": "unavailable", "message": "the database is unavailable; events resume when it is back"}),
                        );
                    }
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: i64, action: &str, target: &str) -> store::AuditRow {
        store::AuditRow {
            id,
            at: Utc::now(),
            actor: "test".into(),
            action: action.into(),
            target: target.into(),
            details: json!({}),
        }
    }

    #[test]
    fn changed_withdrawals_are_named_once_newest_first_and_bounded() {
        let fresh = [
            entry(5, "withdrawal.completed", "withdrawal:2"),
            entry(4, "worker.stop", "worker:tron-withdrawal-1"),
            entry(3, "withdrawal.broadcast", "withdrawal:1"),
            entry(2, "withdrawal.processing", "withdrawal:2"),
            entry(1, "withdrawal.create", "withdrawal:x"),
        ];
        assert_eq!(changed_withdrawals(&fresh), vec![2, 1]);
        let many: Vec<_> = (0..250)
            .rev()
            .map(|id| entry(id, "withdrawal.create", &format!("withdrawal:{id}")))
            .collect();
        let ids = changed_withdrawals(&many);
        assert_eq!(ids.len(), WITHDRAWAL_EVENTS_PER_POLL_MAX);
        assert_eq!(ids[0], 249, "the most recently changed first");
    }
}
