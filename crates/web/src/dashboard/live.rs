//! `GET /live?page=...`: one server-sent event stream per open page, carrying HTML fragments
//! that htmx's SSE extension swaps into the elements whose `sse-swap` names the event
//! (`w-ID` a worker card, `health`, `queues`, `failed`, `audit`, `withdrawals` the withdrawals
//! list with its pager, `withdrawal` one withdrawal's page, `health-report` and `autoscale`
//! the Health page's two parts, `approvals` the withdrawals held for approval, `destinations`
//! the registered destinations, `deposits` the deposits list with its pager), plus `history` (JSON for the charts) and `session-ended`.
//!
//! It shares the process's change feed ([`crate::events::EventHub`]) with the API's event
//! stream, but not its slots: the dashboard has its own, and a session may hold
//! [`DASHBOARD_STREAMS_PER_SESSION_MAX`] of them. A change (a Postgres NOTIFY; on SQLite, "something changed")
//! makes it look again within [`LOOK_DEBOUNCE`]; otherwise it looks once a second, for what
//! has no notification (heartbeats, queue counts, audit entries). Each look compares what the
//! page shows with what it showed and sends only what differs.
//!
//! Reconnects: the first event (`ready`) and every `audit` event carry an SSE `id`, the newest
//! audit entry the page has (0 on other pages). The browser's own reconnect sends it back as
//! `Last-Event-ID`: the new stream then sends every card again (the page may have missed
//! changes) and audit entries after that id only. When the browser gives up and the page
//! opens a new stream itself, it asks for `resync=1` with `after` set to its newest row.

use std::collections::HashMap;
use std::time::Duration;

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;
use store::{AuditList, Change, WithdrawalList, WorkerList};
use tokio::sync::broadcast;

use super::money::{ApprovalRows, DestinationRows};
use super::pages::{
    AuditRows, AutoscaleFragment, Card, CardFragment, CardsFragment, Entry, FailedRows, Health,
    HealthFragment, HealthReportFragment, QueueRows, WithdrawalDetailFragment,
    WithdrawalTableFragment,
};
use super::{DashError, Session};
use crate::AppState;
use crate::events::StreamRefusal;
use domain::limits::{DASHBOARD_AUDIT_PER_LOOK_MAX, DASHBOARD_STREAMS_PER_SESSION_MAX};

/// Shortest gap between two looks caused by changes.
const LOOK_DEBOUNCE: Duration = Duration::from_millis(50);
/// How often a stream looks when nothing is notified, and checks its session.
const LOOK_INTERVAL: Duration = Duration::from_secs(1);
/// How often an idle stream writes a comment: a write is how a closed page is noticed (and
/// its slot freed), so this bounds how long a closed tab counts against its session.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// What the browser waits before reconnecting a dropped stream.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);
/// A card updated this long before the page was rendered may have changed after it: the
/// first look sends it anyway.
const RENDER_MARGIN_MS: i64 = 2_000;
/// A page's render time (`at`) further than this from now is not believed: the stream then
/// sends every card, as after a reconnect.
const RENDERED_AT_SKEW_MAX: chrono::TimeDelta = chrono::TimeDelta::days(1);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LiveQuery {
    page: String,
    id: Option<String>,
    /// When the page was rendered (Unix milliseconds).
    at: Option<i64>,
    /// The newest audit entry the page shows.
    after: Option<i64>,
    /// Send every card: the page lost its stream and may have missed anything.
    resync: Option<u8>,
    /// The workers page's filters, as on the page's own address.
    chain: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    status: Option<String>,
    /// Which workers the page was rendered with ([`super::pages::roster`]).
    roster: Option<String>,
    /// The withdrawals page's state filter (its chain filter is `chain`).
    state: Option<String>,
    /// The charts' range (`1h`, `24h`): how much history the first `history` event sends.
    range: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Page {
    Workers,
    Worker,
    Queues,
    Audit,
    Withdrawals,
    Withdrawal,
    Health,
    Approvals,
    Destinations,
    Deposits,
    None,
}

struct Stream {
    state: AppState,
    session: Session,
    page: Page,
    worker: Option<domain::WorkerId>,
    /// The workers page's filters.
    workers: WorkerList,
    /// The withdrawals page's filters (its first page), or the withdrawal page's id.
    withdrawals: WithdrawalList,
    withdrawal: Option<i64>,
    /// The deposits page's filters (its first page).
    deposits: store::DepositList,
    /// What each event last carried (a fingerprint or the HTML itself).
    shown: HashMap<String, String>,
    /// Items changed before this (Unix ms) are already on the page (the first look only).
    rendered_at: Option<DateTime<Utc>>,
    last_audit_id: i64,
    history_taken: u64,
    /// What the page's charts were last sent.
    history_cursor: super::history::HistoryCursor,
    pending: Vec<Event>,
    closing: bool,
    /// The reconnect delay goes with the first event.
    retry_sent: bool,
}

impl Stream {
    fn send(&mut self, name: &str, data: String) {
        self.send_event(Event::default().event(name).data(non_empty(data)));
    }

    /// Sends `data` as event `name` with the SSE id `id` (what a reconnect sends back).
    fn send_with_id(&mut self, name: &str, data: String, id: i64) {
        self.send_event(
            Event::default()
                .event(name)
                .data(non_empty(data))
                .id(id.to_string()),
        );
    }

    fn send_event(&mut self, mut event: Event) {
        if !self.retry_sent {
            self.retry_sent = true;
            event = event.retry(RECONNECT_AFTER);
        }
        self.pending.push(event);
    }

    /// Sends `data()` as event `name` if `key` differs from what was sent last.
    fn send_if_changed(
        &mut self,
        name: String,
        key: String,
        data: impl FnOnce() -> Result<String, askama::Error>,
    ) -> Result<(), DashError> {
        if self.shown.get(&name) == Some(&key) {
            return Ok(());
        }
        let html = data().map_err(|error| {
            tracing::error!(%error, "dashboard: a fragment did not render");
            DashError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        })?;
        self.send(&name, html);
        self.shown.insert(name, key);
        Ok(())
    }

    async fn look(&mut self) -> Result<(), DashError> {
        let now = Utc::now();
        match self.page {
            Page::Workers => {
                let rows = self.state.store.worker_list(&self.workers).await?;
                let roster = super::pages::roster(&rows);
                if self.shown.get("cards") == Some(&roster) {
                    for row in &rows {
                        self.card(row, now)?;
                    }
                } else {
                    // A worker came or went (registered, or into or out of a filter): the
                    // whole list again, and each card is then what the page shows.
                    let cards: Vec<Card> = rows
                        .iter()
                        .map(|row| Card::new(row, &self.session, now))
                        .collect();
                    let filtered = self.workers.chain.is_some()
                        || self.workers.kind.is_some()
                        || self.workers.status.is_some();
                    self.send_if_changed("cards".into(), roster, || {
                        CardsFragment {
                            cards: &cards,
                            filtered,
                        }
                        .render()
                    })?;
                    for row in &rows {
                        self.shown
                            .insert(format!("w-{}", row.id), Card::fingerprint(row));
                    }
                }
            }
            Page::Worker => {
                let Some(id) = self.worker.clone() else {
                    return Ok(());
                };
                if let Some(row) = self.state.store.worker_get(&id).await? {
                    self.card(&row, now)?;
                    let health = Health::of(&self.state, &row, now);
                    let key = format!(
                        "{}|{:?}",
                        health.state,
                        health
                            .checks
                            .iter()
                            .map(|check| check.ok)
                            .collect::<Vec<_>>()
                    );
                    self.send_if_changed("health".into(), key, || {
                        HealthFragment { health: &health }.render()
                    })?;
                }
                self.history();
            }
            Page::Queues => {
                let queues = super::pages::queue_lines(&self.state).await?;
                let may_act = self.session.allows(domain::Role::Operator);
                let html = QueueRows {
                    queues: &queues,
                    may_act,
                }
                .render()
                .unwrap_or_default();
                // The oldest job's age is in the rows and changes every second, which is what
                // an operator watching a backlog wants to see.
                self.send_if_changed("queues".into(), html.clone(), || Ok(html))?;
                let jobs = super::pages::failed_jobs(&self.state).await?;
                let html = FailedRows {
                    jobs: &jobs,
                    may_act,
                }
                .render()
                .unwrap_or_default();
                self.send_if_changed("failed".into(), html.clone(), || Ok(html))?;
                self.history();
            }
            Page::Audit => {
                let rows = self
                    .state
                    .store
                    .audit_list(&AuditList {
                        limit: DASHBOARD_AUDIT_PER_LOOK_MAX,
                        ..Default::default()
                    })
                    .await?;
                let fresh: Vec<Entry> = rows
                    .iter()
                    .filter(|row| row.id > self.last_audit_id)
                    .map(Entry::new)
                    .collect();
                if let Some(newest) = fresh.first() {
                    self.last_audit_id = newest.id;
                    let html = AuditRows { entries: &fresh }.render().unwrap_or_default();
                    self.send_with_id("audit", html, newest.id);
                }
            }
            Page::Withdrawals => {
                // Any change to a row shown (a new withdrawal, a move, more confirmations)
                // changes the HTML: the table is sent again, whole (fifty rows at most).
                let table = super::pages::withdrawal_table(&self.state, &self.withdrawals).await?;
                let html = WithdrawalTableFragment { table: &table }
                    .render()
                    .unwrap_or_default();
                self.send_if_changed("withdrawals".into(), html.clone(), || Ok(html))?;
            }
            Page::Withdrawal => {
                let Some(id) = self.withdrawal else {
                    return Ok(());
                };
                if let Some(detail) =
                    super::pages::withdrawal_detail(&self.state, &self.session, id).await?
                {
                    let html = WithdrawalDetailFragment { detail: &detail }
                        .render()
                        .unwrap_or_default();
                    self.send_if_changed("withdrawal".into(), html.clone(), || Ok(html))?;
                }
            }
            Page::Health => {
                // The reasons hold ages that change every second: the report is sent again
                // whenever its text differs, as the queues page does with its oldest waits.
                let view = super::pages::health_view(&self.state).await;
                let html = HealthReportFragment { view: &view }
                    .render()
                    .unwrap_or_default();
                self.send_if_changed("health-report".into(), html.clone(), || Ok(html))?;
                let queues = super::pages::scaling_view(&self.state).await?;
                let html = AutoscaleFragment { queues: &queues }
                    .render()
                    .unwrap_or_default();
                self.send_if_changed("autoscale".into(), html.clone(), || Ok(html))?;
            }
            Page::Approvals => {
                // The ages tick in the page; the rows are sent again when a withdrawal comes
                // or goes, or a decision is made.
                let (held, key) = super::money::held(&self.state, &self.session).await?;
                self.send_if_changed("approvals".into(), key, || {
                    ApprovalRows { held: &held }.render()
                })?;
            }
            Page::Destinations => {
                // Sent again when one is added or removed, or its cool-down ends.
                let lines = super::money::destination_lines(&self.state, &self.session).await?;
                let html = DestinationRows { lines: &lines }
                    .render()
                    .unwrap_or_default();
                self.send_if_changed("destinations".into(), html.clone(), || Ok(html))?;
            }
            Page::Deposits => {
                // A new deposit, a credit, a reversal: the list is sent again, whole.
                let table = super::deposits::deposit_table(&self.state, &self.deposits).await?;
                let html = super::deposits::DepositTableFragment { table: &table }
                    .render()
                    .unwrap_or_default();
                self.send_if_changed("deposits".into(), html.clone(), || Ok(html))?;
                let sweeps = super::deposits::sweep_table(&self.state).await?;
                let html = super::deposits::SweepTableFragment { sweeps: &sweeps }
                    .render()
                    .unwrap_or_default();
                self.send_if_changed("sweeps".into(), html.clone(), || Ok(html))?;
            }
            Page::None => {}
        }
        self.rendered_at = None;
        Ok(())
    }

    fn card(&mut self, row: &store::WorkerRow, now: DateTime<Utc>) -> Result<(), DashError> {
        let name = format!("w-{}", row.id);
        let key = Card::fingerprint(row);
        let on_page_already = self
            .rendered_at
            .and_then(|at| at.checked_sub_signed(chrono::TimeDelta::milliseconds(RENDER_MARGIN_MS)))
            .is_some_and(|at| row.updated_at < at);
        if on_page_already {
            self.shown.insert(name, key);
            return Ok(());
        }
        let card = Card::new(row, &self.session, now);
        self.send_if_changed(name, key, || CardFragment { card: &card }.render())
    }

    /// Sends the chart history when a new sample was taken: all of it the first time, then
    /// the new samples. Keeps the sampler running while a page with charts is open.
    fn history(&mut self) {
        let state = &self.state;
        state.history.ensure_running(
            state.store.clone(),
            state.queue.clone(),
            state.options.heartbeat_interval,
            state.shutdown.clone(),
        );
        let taken = state.history.taken();
        if taken == self.history_taken {
            return;
        }
        self.history_taken = taken;
        let data = match (self.page, &self.worker) {
            (Page::Worker, Some(id)) => state
                .history
                .worker_update(id.as_str(), &mut self.history_cursor),
            (Page::Queues, _) => state.history.queues_update(&mut self.history_cursor),
            _ => return,
        };
        self.send("history", data);
    }
}

/// A browser drops an event whose data is empty (the SSE rules), so an emptied table (the last
/// failed job retried) would never reach the page: it is sent as one space instead.
fn non_empty(data: String) -> String {
    if data.is_empty() { " ".into() } else { data }
}

/// When the page was rendered, if `at` (Unix milliseconds, from the query string, so anything)
/// is a time within [`RENDERED_AT_SKEW_MAX`] of `now`; otherwise unknown.
fn rendered_at(at: i64, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let at = Utc.timestamp_millis_opt(at).single()?;
    let skew = at.signed_duration_since(now).abs();
    (skew <= RENDERED_AT_SKEW_MAX).then_some(at)
}

/// `GET /live` (see the module's documentation).
pub(crate) async fn live(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    query: Result<Query<LiveQuery>, QueryRejection>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>>, DashError>
{
    use tokio::time::MissedTickBehavior;
    let Query(query) = query
        .map_err(|error| DashError::new(StatusCode::BAD_REQUEST, "invalid", error.body_text()))?;
    let page = match query.page.as_str() {
        "workers" => Page::Workers,
        "worker" => Page::Worker,
        "queues" => Page::Queues,
        "audit" => Page::Audit,
        "withdrawals" => Page::Withdrawals,
        "withdrawal" => Page::Withdrawal,
        "health" => Page::Health,
        "approvals" => Page::Approvals,
        "destinations" => Page::Destinations,
        "deposits" => Page::Deposits,
        "none" => Page::None,
        other => {
            return Err(DashError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!(
                    "no live page {other:?}: workers, worker, queues, audit, withdrawals, withdrawal, health, approvals, destinations, deposits or none"
                ),
            ));
        }
    };
    let (worker, withdrawal) = match (page, query.id) {
        (Page::Worker, Some(id)) => (Some(crate::api::worker_id(id)?), None),
        (Page::Withdrawal, Some(id)) => (None, Some(crate::withdrawals::withdrawal_id(&id)?)),
        (Page::Worker | Page::Withdrawal, None) => {
            return Err(DashError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                "page=worker and page=withdrawal need id=ID",
            ));
        }
        _ => (None, None),
    };
    let slot = state
        .events
        .open_dashboard_stream(&session.id_hash)
        .map_err(|refusal| match refusal {
            StreamRefusal::SessionFull => DashError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "{DASHBOARD_STREAMS_PER_SESSION_MAX} live dashboard pages are open in this session; close one"
                ),
            ),
            StreamRefusal::Full => DashError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "too many live pages are open; close one or try later",
            ),
        })?;
    // The token's own cap counts its API streams and every session's pages together.
    let slot = (
        slot,
        state
            .events
            .open_token_stream(&session.token)
            .map_err(DashError::from)?,
    );
    // Subscribe before the first look, so no change in between is missed.
    let changes = state.events.subscribe().await?;
    // The browser reconnecting by itself names the newest audit entry the page has.
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|text| text.parse::<i64>().ok())
                .filter(|id| *id >= 0)
                .ok_or_else(|| {
                    DashError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid",
                        "Last-Event-ID is not an event id of this server; reload the page",
                    )
                })?,
        ),
    };
    let reconnect = query.resync.is_some() || last_event_id.is_some();
    let rendered_at = match (reconnect, query.at) {
        (false, Some(at)) => rendered_at(at, Utc::now()),
        _ => None,
    };
    // The deposits page's live stream follows its first page only, as the withdrawals'.
    let deposits = match page {
        Page::Deposits => super::deposits::DepositFilter {
            state: query.state.clone(),
            chain: query.chain.clone(),
            before_id: None,
        }
        .list()?,
        _ => store::DepositList {
            limit: super::deposits::DEPOSITS_PAGE,
            ..Default::default()
        },
    };
    // The withdrawals page's live stream follows its first page only.
    let withdrawals = super::pages::WithdrawalFilter {
        state: if page == Page::Deposits {
            None
        } else {
            query.state
        },
        chain: query.chain.clone(),
        before_id: None,
    }
    .list()?;
    let range = super::pages::ChartRange::parse(query.range.as_deref())?;
    let workers = super::pages::WorkerFilter {
        chain: query.chain,
        kind: query.kind,
        status: query.status,
    }
    .list()?;
    // The page shows the workers it was rendered with, unless it may have missed a change.
    let mut shown = HashMap::new();
    if let (Some(roster), Some(_)) = (query.roster, rendered_at) {
        shown.insert("cards".to_string(), roster);
    }
    let mut stream = Stream {
        state,
        session,
        page,
        worker,
        workers,
        withdrawals,
        withdrawal,
        deposits,
        shown,
        rendered_at,
        last_audit_id: last_event_id.or(query.after).unwrap_or(i64::MAX),
        history_taken: 0,
        history_cursor: super::history::HistoryCursor::over(range.seconds()),
        pending: Vec::new(),
        closing: false,
        retry_sent: false,
    };
    // The first event carries the reconnect delay and tells the page it is live.
    let ready_id = match page {
        Page::Audit => stream.last_audit_id.clamp(0, i64::MAX),
        _ => 0,
    };
    stream.send_with_id("ready", String::new(), ready_id);
    stream.look().await?;
    let mut poll = tokio::time::interval(LOOK_INTERVAL);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut debounce = tokio::time::interval(LOOK_DEBOUNCE);
    debounce.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let state = (stream, changes, poll, debounce, false, slot);
    let events = futures_util::stream::unfold(
        state,
        |(mut stream, mut changes, mut poll, mut debounce, mut dirty, slot)| async move {
            loop {
                if !stream.pending.is_empty() {
                    let event = stream.pending.remove(0);
                    return Some((Ok(event), (stream, changes, poll, debounce, dirty, slot)));
                }
                if stream.closing {
                    return None;
                }
                let outcome = tokio::select! {
                    // The server is shutting down: end, so it need not wait for this page.
                    () = stream.state.shutdown.cancelled() => return None,
                    change = changes.recv() => match change {
                        Ok(Change::Job(_)) if stream.page != Page::Queues => Ok(()),
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                            dirty = true;
                            Ok(())
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                    _ = debounce.tick(), if dirty => {
                        dirty = false;
                        stream.look().await
                    }
                    _ = poll.tick() => {
                        match stream.state.store.session_authenticate(&stream.session.id_hash, Utc::now()).await {
                            Ok(Some(_)) => stream.look().await,
                            Ok(None) => {
                                stream.send("session-ended", "/login".into());
                                stream.closing = true;
                                Ok(())
                            }
                            Err(error) => Err(DashError::from(error)),
                        }
                    }
                };
                if let Err(error) = outcome {
                    // The database is away: the page keeps what it shows; the next look
                    // catches up.
                    tracing::debug!(?error, "dashboard live: could not look");
                }
            }
        },
    );
    // A closed tab is noticed at the next write: a comment every second frees its slot soon.
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE_INTERVAL)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_times_far_from_now_are_not_believed() {
        let now = Utc::now();
        let ms = now.timestamp_millis();
        assert_eq!(
            rendered_at(ms, now).map(|at| at.timestamp_millis()),
            Some(ms)
        );
        assert!(rendered_at(ms - 60_000, now).is_some());
        for far in [
            i64::MIN,
            i64::MIN / 1000,
            i64::MIN / 1000 + 1_000,
            DateTime::<Utc>::MIN_UTC.timestamp_millis(),
            DateTime::<Utc>::MIN_UTC.timestamp_millis() + 1_000,
            DateTime::<Utc>::MAX_UTC.timestamp_millis(),
            0,
            ms + 2 * 86_400_000,
            i64::MAX,
        ] {
            assert_eq!(rendered_at(far, now), None, "{far}");
        }
    }
}
