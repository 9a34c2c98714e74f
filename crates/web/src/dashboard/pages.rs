//! The dashboard's pages and actions: each page is one askama template over the same layout
//! (`templates/base.html`); each action calls the admin API's own operation (same store call,
//! same audit entry) and answers with nothing: the page's live stream sends what changed.

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use domain::{
    Chain, ControlAction, DesiredState, JobState, Role, WithdrawalState, WorkerKind, WorkerStatus,
};
use serde::Deserialize;
use store::{
    AuditList, AuditRow, JobList, JobRow, QueueStats, WithdrawalList, WithdrawalRow, WorkerList,
    WorkerRow,
};

use super::{DashError, Session, assets, is_htmx};
use crate::AppState;
use crate::api::{ApiError, JobAction};

/// Workers shown on one page at most (the store's list limit).
const WORKERS_PAGE_MAX: u32 = domain::limits::LIST_LIMIT_MAX;
/// Audit entries per page, and on a worker's page.
const AUDIT_PAGE: u32 = 50;
const WORKER_AUDIT: u32 = 20;
/// Failed jobs listed on the queues page (the newest).
const FAILED_JOBS_SHOWN: u32 = 50;
/// Withdrawals per page of the list.
pub(crate) const WITHDRAWALS_PAGE: u32 = 50;
/// Audit entries read for one withdrawal's page: its whole trail in practice (a handful of
/// moves, a few more with fee bumps); the newest ones if it ever had more.
const WITHDRAWAL_AUDIT_MAX: u32 = 200;

/// What every page's layout needs.
#[derive(Debug)]
pub(crate) struct Layout {
    pub(crate) title: String,
    pub(crate) nav: &'static str,
    pub(crate) user: String,
    pub(crate) role: &'static str,
    pub(crate) csrf: String,
    pub(crate) now_ms: i64,
    pub(crate) live_url: String,
    pub(crate) assets: &'static assets::Urls,
    pub(crate) charts: bool,
    /// How often the charts' history is sampled, for people ("5 s").
    pub(crate) sampled_every: String,
    /// What the charts show: the last hour or day.
    pub(crate) range: ChartRange,
    pub(crate) queues_charted: usize,
}

/// How far back a page's charts go; on its address as `range=1h|24h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum ChartRange {
    #[default]
    Hour,
    Day,
}

impl ChartRange {
    pub(crate) const ALL: [ChartRange; 2] = [ChartRange::Hour, ChartRange::Day];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ChartRange::Hour => "1h",
            ChartRange::Day => "24h",
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            ChartRange::Hour => "1 h",
            ChartRange::Day => "24 h",
        }
    }

    pub(crate) fn seconds(self) -> i64 {
        match self {
            ChartRange::Hour => 3_600,
            ChartRange::Day => 86_400,
        }
    }

    /// The oldest minute the charts show, `now` being `now`.
    fn since(self, now: DateTime<Utc>) -> i64 {
        now.timestamp() - self.seconds()
    }

    pub(crate) fn parse(text: Option<&str>) -> Result<ChartRange, DashError> {
        match text.map(str::trim).unwrap_or_default() {
            "" | "1h" => Ok(ChartRange::Hour),
            "24h" => Ok(ChartRange::Day),
            other => Err(DashError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("range: {other:?} is not a chart range; use 1h or 24h"),
            )),
        }
    }
}

/// A page with charts: its time range, from the address.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChartQuery {
    range: Option<String>,
}

impl Layout {
    pub(crate) fn new(
        session: &Session,
        title: impl Into<String>,
        nav: &'static str,
        live: String,
    ) -> Self {
        Layout {
            title: title.into(),
            nav,
            user: session.token.name.clone(),
            role: session.token.role.as_str(),
            csrf: session.csrf.clone(),
            now_ms: Utc::now().timestamp_millis(),
            live_url: live,
            assets: assets::urls(),
            charts: false,
            sampled_every: String::new(),
            range: ChartRange::Hour,
            queues_charted: domain::limits::HISTORY_QUEUES_CHARTED_MAX,
        }
    }
}

pub(crate) fn html(template: &impl Template) -> Result<Response, DashError> {
    let body = template.render().map_err(|error| {
        tracing::error!(%error, "dashboard: a template did not render");
        DashError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        body,
    )
        .into_response())
}

#[derive(Template)]
#[template(path = "flash.html")]
struct Flash<'a> {
    message: &'a str,
    error: bool,
}

/// A message for the `#flash` area.
pub(crate) fn render_flash(message: &str, error: bool) -> String {
    Flash { message, error }
        .render()
        .unwrap_or_else(|_| "error".into())
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    css: &'a str,
    favicon: &'a str,
    title: &'a str,
    message: &'a str,
    back: &'a str,
}

/// A whole page saying why a page could not be shown.
pub(crate) fn render_error_page(status: StatusCode, message: &str, back: &str) -> Response {
    let title = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::BAD_REQUEST => "Bad address",
        StatusCode::FORBIDDEN => "Not allowed",
        _ => "Could not show this page",
    };
    html(&ErrorPage {
        css: &assets::urls().css,
        favicon: &assets::urls().favicon,
        title,
        message,
        back,
    })
    .unwrap_or_else(IntoResponse::into_response)
}

// ---------------------------------------------------------------- login

#[derive(Template)]
#[template(path = "login.html")]
struct Login<'a> {
    css: &'a str,
    favicon: &'a str,
    message: Option<&'a str>,
}

pub(crate) async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, DashError> {
    if super::find_session(&state, &headers).await?.is_some() {
        return Ok(super::see_other("/"));
    }
    let mut response = html(&Login {
        css: &assets::urls().css,
        favicon: &assets::urls().favicon,
        message: None,
    })?;
    super::protect(response.headers_mut());
    Ok(response)
}

/// The login page again, with why the login failed.
pub(crate) fn login_failed(status: StatusCode, message: &str) -> Response {
    let page = Login {
        css: &assets::urls().css,
        favicon: &assets::urls().favicon,
        message: Some(message),
    };
    let mut response = match html(&page) {
        Ok(response) => response,
        Err(error) => return error.into_response(),
    };
    *response.status_mut() = status;
    super::protect(response.headers_mut());
    response
}

// ---------------------------------------------------------------- workers

/// A worker card's content (the seed's card: name, chain • type, status badge, last seen,
/// Start / Stop / Restart, last error).
#[derive(Debug)]
pub(crate) struct Card {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) chain: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) status: &'static str,
    /// What the worker is on its way to, when it is not there yet ("stopping", ...).
    pub(crate) pending: Option<&'static str>,
    pub(crate) last_heartbeat: Option<String>,
    pub(crate) seen_ago: String,
    pub(crate) last_error: Option<String>,
    pub(crate) start: bool,
    pub(crate) stop: bool,
    pub(crate) restart: bool,
    /// Why the controls are disabled for this operator, if they are.
    pub(crate) locked: Option<String>,
}

/// A time as every page shows it: UTC to the second, in a `<time>` element whose
/// `datetime` lets the page's script show how long ago it was on hover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp(pub(crate) DateTime<Utc>);

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "<time datetime=\"{}\">{}</time>",
            self.0.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            self.0.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

/// Only digits, dashes, colons and letters of our own formats: nothing to escape.
impl askama::filters::HtmlSafe for Stamp {}

/// "3 s", "4 min", "2 h", "5 d": how long ago, for people.
pub(crate) fn ago(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - at).num_seconds().max(0);
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3_600 => format!("{} min", seconds / 60),
        3_600..86_400 => format!("{} h", seconds / 3_600),
        _ => format!("{} d", seconds / 86_400),
    }
}

impl Card {
    pub(crate) fn new(row: &WorkerRow, session: &Session, now: DateTime<Utc>) -> Card {
        let allowed = |action: ControlAction| {
            action
                .decide(
                    row.desired_state,
                    row.status,
                    row.applied_generation < row.generation,
                )
                .is_ok()
                // Starting a worker that is already on its way to running means nothing.
                && !(action == ControlAction::Start && row.status == WorkerStatus::Running)
        };
        let pending = match (row.desired_state, row.status) {
            (DesiredState::Stopped, status)
                if status.is_alive() && status != WorkerStatus::Stopped =>
            {
                Some("stopping")
            }
            (DesiredState::Running, WorkerStatus::Stopped) => Some("starting"),
            _ if row.applied_generation < row.generation && row.status.is_alive() => {
                Some("restarting")
            }
            _ => None,
        };
        let may_act = session.allows(Role::Operator);
        Card {
            id: row.id.as_str().to_string(),
            name: row.name.clone(),
            chain: row.chain.as_str(),
            kind: row.kind.as_str(),
            status: row.status.as_str(),
            pending,
            last_heartbeat: row.last_heartbeat.map(|at| at.to_rfc3339()),
            seen_ago: row
                .last_heartbeat
                .map(|at| ago(at, now))
                .unwrap_or_default(),
            last_error: row.last_error.clone(),
            start: may_act && allowed(ControlAction::Start),
            stop: may_act && allowed(ControlAction::Stop),
            restart: may_act && allowed(ControlAction::Restart),
            locked: (!may_act).then(|| {
                format!(
                    "you are logged in as a {}: controls need the operator role",
                    session.token.role
                )
            }),
        }
    }

    /// What the card shows, minus the time that passes: the live stream sends a card again
    /// only when this changes.
    pub(crate) fn fingerprint(row: &WorkerRow) -> String {
        format!(
            "{}|{}|{}|{}|{}|{:?}|{:?}|{}",
            row.status,
            row.desired_state,
            row.generation,
            row.applied_generation,
            row.name,
            row.last_heartbeat,
            row.last_error,
            row.updated_at
        )
    }
}

#[derive(Template)]
#[template(path = "worker_card.html")]
pub(crate) struct CardFragment<'a> {
    pub(crate) card: &'a Card,
}

/// One filter's choices, each with whether it is selected.
#[derive(Debug)]
pub(crate) struct Filter {
    pub(crate) name: &'static str,
    pub(crate) label: &'static str,
    pub(crate) options: Vec<(&'static str, bool)>,
}

/// A money list's state and chain filters (`states`: every state's name; `state`, `chain`:
/// the chosen ones), and its live stream's URL with the same filters; an older page
/// (`paged`) is not live, since new rows land on the first.
pub(crate) fn state_chain_view(
    page: &str,
    states: impl Iterator<Item = &'static str>,
    state: Option<&'static str>,
    chain: Option<Chain>,
    paged: bool,
) -> (Vec<Filter>, String) {
    let filters = vec![
        Filter {
            name: "state",
            label: "State",
            options: states.map(|each| (each, Some(each) == state)).collect(),
        },
        Filter {
            name: "chain",
            label: "Chain",
            options: Chain::ALL
                .iter()
                .map(|each| (each.as_str(), Some(*each) == chain))
                .collect(),
        },
    ];
    if paged {
        return (filters, "/live?page=none".to_string());
    }
    let mut live = format!("/live?page={page}");
    for (name, value) in [("state", state), ("chain", chain.map(Chain::as_str))] {
        if let Some(value) = value {
            live.push_str(&format!("&{name}={value}"));
        }
    }
    (filters, live)
}

/// The worker cards with their count: what the live stream sends again, whole, when the set
/// of workers matching the page's filters changes (one registered, one that left a filter).
#[derive(Template)]
#[template(path = "worker_cards.html")]
pub(crate) struct CardsFragment<'a> {
    pub(crate) cards: &'a [Card],
    pub(crate) filtered: bool,
}

/// A short fingerprint of which workers a list shows, in order.
pub(crate) fn roster(rows: &[WorkerRow]) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    for row in rows {
        hash.update(row.id.as_str().as_bytes());
        hash.update(b"\n");
    }
    crate::auth::hex(&hash.finalize()[..8])
}

#[derive(Template)]
#[template(path = "workers.html")]
struct WorkersPage {
    layout: Layout,
    filters: Vec<Filter>,
    cards: Vec<Card>,
    filtered: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkerFilter {
    pub(crate) chain: Option<String>,
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    pub(crate) status: Option<String>,
}

impl WorkerFilter {
    /// The store's list for these filters, or a clear error for a bad one.
    pub(crate) fn list(&self) -> Result<WorkerList, DashError> {
        Ok(WorkerList {
            chain: choice("chain", self.chain.as_deref())?,
            kind: choice("type", self.kind.as_deref())?,
            status: choice("status", self.status.as_deref())?,
            limit: WORKERS_PAGE_MAX,
            offset: 0,
        })
    }
}

/// An empty form field means "all".
pub(crate) fn choice<T: std::str::FromStr>(
    what: &str,
    text: Option<&str>,
) -> Result<Option<T>, DashError>
where
    T::Err: std::fmt::Display,
{
    match text.map(str::trim).filter(|text| !text.is_empty()) {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|error| {
            DashError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("{what}: {error}"),
            )
        }),
    }
}

pub(crate) fn bad_query(error: QueryRejection) -> DashError {
    DashError::new(StatusCode::BAD_REQUEST, "invalid", error.body_text())
}

/// `GET /`: the worker cards, filtered by chain, type and status.
pub(crate) async fn workers_page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    query: Result<Query<WorkerFilter>, QueryRejection>,
) -> Result<Response, DashError> {
    let Query(filter) = query.map_err(bad_query)?;
    let list = filter.list()?;
    let (chain, kind, status) = (list.chain, list.kind, list.status);
    let rows = state.store.worker_list(&list).await?;
    let now = Utc::now();
    let cards = rows
        .iter()
        .map(|row| Card::new(row, &session, now))
        .collect();
    let filters = vec![
        Filter {
            name: "chain",
            label: "Chain",
            options: Chain::ALL
                .iter()
                .map(|each| (each.as_str(), Some(*each) == chain))
                .collect(),
        },
        Filter {
            name: "type",
            label: "Type",
            options: WorkerKind::ALL
                .iter()
                .map(|each| (each.as_str(), Some(*each) == kind))
                .collect(),
        },
        Filter {
            name: "status",
            label: "Status",
            options: WorkerStatus::ALL
                .iter()
                .map(|each| (each.as_str(), Some(*each) == status))
                .collect(),
        },
    ];
    // The stream lists the same workers, and knows which the page shows.
    let mut live = format!(
        "/live?page=workers&at={}&roster={}",
        now.timestamp_millis(),
        roster(&rows)
    );
    for (name, value) in [
        ("chain", chain.map(|each| each.as_str())),
        ("type", kind.map(|each| each.as_str())),
        ("status", status.map(|each| each.as_str())),
    ] {
        if let Some(value) = value {
            live.push_str(&format!("&{name}={value}"));
        }
    }
    html(&WorkersPage {
        layout: Layout::new(&session, "Workers", "workers", live),
        filters,
        cards,
        filtered: chain.is_some() || kind.is_some() || status.is_some(),
    })
}

/// `POST /workers/{id}/{start|stop|restart}`: the API's control operation. The answer to htmx
/// is empty (204): the page's live stream sends the changed card within a look (about 50 ms
/// after the store's notification). Answering with the card instead could put an older card
/// over a newer one the stream had already swapped in, when the answer is slow.
pub(crate) async fn worker_action(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    headers: HeaderMap,
    action: ControlAction,
) -> Result<Response, DashError> {
    crate::api::control_worker(&state, &session.actor(), id, action).await?;
    Ok(done(&headers))
}

/// The answer to an action that took effect: nothing for htmx (the live stream shows the
/// change), the page it came from for a plain form.
pub(crate) fn done(headers: &HeaderMap) -> Response {
    if is_htmx(headers) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        back(headers)
    }
}

/// After a plain form post (no htmx): back to the page it came from.
fn back(headers: &HeaderMap) -> Response {
    let path = headers
        .get(header::REFERER)
        .and_then(|value| value.to_str().ok())
        .and_then(|referer| {
            let rest = referer
                .strip_prefix("http://")
                .or_else(|| referer.strip_prefix("https://"))?;
            rest.find('/').map(|slash| rest[slash..].to_string())
        })
        .filter(|path| path.starts_with('/') && !path.starts_with("//"))
        .unwrap_or_else(|| "/".to_string());
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(&path) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

// ---------------------------------------------------------------- worker detail

/// One health check, as the admin API reports it.
#[derive(Debug)]
pub(crate) struct Check {
    pub(crate) name: String,
    pub(crate) ok: bool,
    pub(crate) detail: String,
}

#[derive(Debug)]
pub(crate) struct Health {
    pub(crate) state: String,
    pub(crate) checks: Vec<Check>,
}

impl Health {
    pub(crate) fn of(state: &AppState, row: &WorkerRow, now: DateTime<Utc>) -> Health {
        let value = crate::dto::worker_health(row, now, state.options.heartbeat_interval);
        let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_string();
        Health {
            state: text(&value["state"]),
            checks: value["checks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|check| Check {
                    name: text(&check["name"]),
                    ok: check["ok"].as_bool().unwrap_or(false),
                    detail: text(&check["detail"]),
                })
                .collect(),
        }
    }
}

#[derive(Template)]
#[template(path = "health.html")]
pub(crate) struct HealthFragment<'a> {
    pub(crate) health: &'a Health,
}

/// An audit entry for a table row.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) id: i64,
    pub(crate) at: Stamp,
    pub(crate) actor: String,
    pub(crate) action: String,
    pub(crate) target: String,
    pub(crate) details: String,
}

impl Entry {
    pub(crate) fn new(row: &AuditRow) -> Entry {
        Entry {
            id: row.id,
            at: Stamp(row.at),
            actor: row.actor.clone(),
            action: row.action.clone(),
            target: row.target.clone(),
            details: if row
                .details
                .as_object()
                .is_some_and(|object| object.is_empty())
            {
                String::new()
            } else {
                // Indented, one field a line: readable in a narrow column, where one long
                // line would wrap a character at a time.
                serde_json::to_string_pretty(&row.details).unwrap_or_default()
            },
        }
    }
}

#[derive(Template)]
#[template(path = "audit_rows.html")]
pub(crate) struct AuditRows<'a> {
    pub(crate) entries: &'a [Entry],
}

#[derive(Template)]
#[template(path = "worker.html")]
struct WorkerPage {
    layout: Layout,
    card: Card,
    health: Health,
    entries: Vec<Entry>,
    history: String,
    pid: String,
    host: String,
    version: String,
    rss: String,
    in_flight: i64,
    processed: i64,
    failed: i64,
}

/// `GET /workers/{id}`: the card, health checks, charts and the worker's audit trail.
pub(crate) async fn worker_page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    query: Result<Query<ChartQuery>, QueryRejection>,
) -> Result<Response, DashError> {
    let Query(query) = query.map_err(bad_query)?;
    let range = ChartRange::parse(query.range.as_deref())?;
    let id = crate::api::worker_id(id)?;
    let row = state.store.worker_get(&id).await?.ok_or_else(|| {
        DashError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("worker {id} not found"),
        )
    })?;
    state.history.ensure_running(
        state.store.clone(),
        state.queue.clone(),
        state.options.heartbeat_interval,
        state.shutdown.clone(),
    );
    let audit = state
        .store
        .audit_list(&AuditList {
            target: Some(format!("worker:{id}")),
            limit: WORKER_AUDIT,
            ..Default::default()
        })
        .await?;
    let now = Utc::now();
    let live = format!(
        "/live?page=worker&id={id}&at={}&range={}",
        now.timestamp_millis(),
        range.as_str()
    );
    let mut layout = Layout::new(&session, row.name.clone(), "workers", live);
    layout.charts = true;
    layout.range = range;
    layout.sampled_every = format!("{:?}", state.options.heartbeat_interval);
    html(&WorkerPage {
        layout,
        card: Card::new(&row, &session, now),
        health: Health::of(&state, &row, now),
        entries: audit.iter().map(Entry::new).collect(),
        history: state.history.worker_json(id.as_str(), range.since(now)),
        pid: row.pid.map(|pid| pid.to_string()).unwrap_or_default(),
        host: row.host.clone().unwrap_or_default(),
        version: row.version.clone().unwrap_or_default(),
        rss: row
            .rss_bytes
            .map(|bytes| format!("{} MiB", bytes / (1024 * 1024)))
            .unwrap_or_default(),
        in_flight: row.in_flight,
        processed: row.processed_total,
        failed: row.failed_total,
    })
}

// ---------------------------------------------------------------- queues

#[derive(Debug)]
pub(crate) struct QueueLine {
    pub(crate) name: String,
    pub(crate) paused: bool,
    pub(crate) limit: String,
    pub(crate) available: i64,
    pub(crate) scheduled: i64,
    pub(crate) running: i64,
    pub(crate) completed: i64,
    pub(crate) failed: i64,
    pub(crate) oldest: String,
}

impl QueueLine {
    pub(crate) fn new(stats: &QueueStats, now: DateTime<Utc>) -> QueueLine {
        QueueLine {
            name: stats.name.as_str().to_string(),
            paused: stats.paused,
            limit: stats
                .concurrency_limit
                .map(|limit| limit.to_string())
                .unwrap_or_else(|| "none".into()),
            available: stats.available,
            scheduled: stats.scheduled,
            running: stats.running,
            completed: stats.completed,
            failed: stats.failed,
            oldest: stats
                .oldest_available_at
                .map(|at| ago(at, now))
                .unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "queue_rows.html")]
pub(crate) struct QueueRows<'a> {
    pub(crate) queues: &'a [QueueLine],
    pub(crate) may_act: bool,
}

/// A failed job with its error history.
#[derive(Debug)]
pub(crate) struct FailedJob {
    pub(crate) id: i64,
    pub(crate) queue: String,
    pub(crate) kind: String,
    pub(crate) attempts: String,
    pub(crate) finished: Option<Stamp>,
    pub(crate) last_error: String,
    pub(crate) errors: Vec<JobError>,
}

/// One failed attempt of a job, from its error history.
#[derive(Debug)]
pub(crate) struct JobError {
    pub(crate) attempt: String,
    pub(crate) at: Option<Stamp>,
    pub(crate) message: String,
}

/// A job's error history, oldest first: `[{"attempt", "at", "error"}]`.
pub(crate) fn job_errors(job: &JobRow) -> Vec<JobError> {
    job.errors
        .as_array()
        .into_iter()
        .flatten()
        .map(|error| JobError {
            attempt: error["attempt"].to_string(),
            at: error["at"]
                .as_str()
                .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
                .map(|at| Stamp(at.with_timezone(&Utc))),
            message: error["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| error.to_string()),
        })
        .collect()
}

impl FailedJob {
    pub(crate) fn new(job: &JobRow) -> FailedJob {
        let errors = job_errors(job);
        let last_error = errors
            .last()
            .map(|error| error.message.clone())
            .unwrap_or_default();
        FailedJob {
            id: job.id,
            queue: job.queue.as_str().to_string(),
            kind: job.kind.as_str().to_string(),
            attempts: format!("{}/{}", job.attempt, job.max_attempts),
            finished: job.finished_at.map(Stamp),
            last_error,
            errors,
        }
    }
}

#[derive(Template)]
#[template(path = "failed_rows.html")]
pub(crate) struct FailedRows<'a> {
    pub(crate) jobs: &'a [FailedJob],
    pub(crate) may_act: bool,
}

#[derive(Template)]
#[template(path = "queues.html")]
struct QueuesPage {
    layout: Layout,
    queues: Vec<QueueLine>,
    jobs: Vec<FailedJob>,
    may_act: bool,
    history: String,
}

pub(crate) async fn failed_jobs(state: &AppState) -> Result<Vec<FailedJob>, DashError> {
    let jobs = state
        .queue
        .list(&JobList {
            state: Some(JobState::Failed),
            limit: FAILED_JOBS_SHOWN,
            ..Default::default()
        })
        .await?;
    Ok(jobs.iter().map(FailedJob::new).collect())
}

pub(crate) async fn queue_lines(state: &AppState) -> Result<Vec<QueueLine>, DashError> {
    let now = Utc::now();
    let stats = state.queue.stats(now).await?;
    Ok(stats
        .iter()
        .map(|stats| QueueLine::new(stats, now))
        .collect())
}

/// `GET /queues`: depth by state, charts, pause / resume; failed jobs with retry / discard.
pub(crate) async fn queues_page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    query: Result<Query<ChartQuery>, QueryRejection>,
) -> Result<Response, DashError> {
    let Query(query) = query.map_err(bad_query)?;
    let range = ChartRange::parse(query.range.as_deref())?;
    state.history.ensure_running(
        state.store.clone(),
        state.queue.clone(),
        state.options.heartbeat_interval,
        state.shutdown.clone(),
    );
    let queues = queue_lines(&state).await?;
    let jobs = failed_jobs(&state).await?;
    let live = format!(
        "/live?page=queues&at={}&range={}",
        Utc::now().timestamp_millis(),
        range.as_str()
    );
    let mut layout = Layout::new(&session, "Queues", "queues", live);
    layout.charts = true;
    layout.range = range;
    layout.sampled_every = format!("{:?}", state.options.heartbeat_interval);
    html(&QueuesPage {
        layout,
        queues,
        jobs,
        may_act: session.allows(Role::Operator),
        history: state.history.queues_json(range.since(Utc::now())),
    })
}

/// `POST /queues/{name}/{pause|resume}`: the queue table follows on the live stream.
pub(crate) async fn queue_action(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    headers: HeaderMap,
    paused: bool,
) -> Result<Response, DashError> {
    crate::api::pause_queue(&state, &session.actor(), &name, paused).await?;
    Ok(done(&headers))
}

/// `POST /jobs/{id}/{retry|discard}`: the failed-jobs table follows on the live stream.
pub(crate) async fn job_action(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    headers: HeaderMap,
    action: JobAction,
) -> Result<Response, DashError> {
    crate::api::act_on_job(&state, &session.actor(), &id, action).await?;
    Ok(done(&headers))
}

// ---------------------------------------------------------------- jobs

/// Jobs a search by kind looks through: the newest, as many as one list may hold. The store
/// has no index by kind; an operator looking for a kind looks for recent jobs of it.
const JOB_SEARCH_SCANNED: u32 = domain::limits::LIST_LIMIT_MAX;
/// Jobs a search by kind shows at most.
const JOB_SEARCH_SHOWN: usize = 100;

/// One job, as its page shows it.
#[derive(Debug)]
pub(crate) struct JobDetail {
    pub(crate) id: i64,
    pub(crate) queue: String,
    pub(crate) kind: String,
    pub(crate) state: &'static str,
    pub(crate) attempt: i32,
    pub(crate) max_attempts: i32,
    pub(crate) priority: i16,
    pub(crate) unique_key: Option<String>,
    pub(crate) args: String,
    pub(crate) created: Stamp,
    pub(crate) run_at: Stamp,
    pub(crate) started: Option<Stamp>,
    pub(crate) finished: Option<Stamp>,
    /// The worker that holds (or last held) its lease, from `WORKER_ID:INCARNATION`.
    pub(crate) worker: Option<String>,
    /// It holds the lease now (else it held it last).
    pub(crate) running: bool,
    pub(crate) incarnation: String,
    pub(crate) rescues: i32,
    pub(crate) errors: Vec<JobError>,
    pub(crate) retry: bool,
    pub(crate) discard: bool,
}

impl JobDetail {
    fn new(job: &JobRow, may_act: bool) -> JobDetail {
        // The lease holder while it runs; once it ended, the queue clears the lease and
        // keeps who held it last.
        let owner = job.lease_owner.as_ref().or(job.last_worker.as_ref());
        let (worker, incarnation) = match owner.map(|owner| owner.rsplit_once(':')) {
            Some(Some((worker, incarnation))) => {
                (Some(worker.to_string()), incarnation.to_string())
            }
            Some(None) => (owner.cloned(), String::new()),
            None => (None, String::new()),
        };
        JobDetail {
            id: job.id,
            queue: job.queue.as_str().to_string(),
            kind: job.kind.as_str().to_string(),
            state: job.state.as_str(),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            priority: job.priority,
            unique_key: job.unique_key.clone(),
            args: serde_json::to_string_pretty(&job.args).unwrap_or_default(),
            created: Stamp(job.created_at),
            run_at: Stamp(job.run_at),
            started: job.started_at.map(Stamp),
            finished: job.finished_at.map(Stamp),
            worker,
            running: job.lease_owner.is_some(),
            incarnation,
            rescues: job.rescues,
            errors: job_errors(job),
            retry: may_act
                && job.state.can_transition(JobState::Available)
                && job.state.is_finished(),
            discard: may_act
                && job.state.can_transition(JobState::Cancelled)
                && job.state != JobState::Running,
        }
    }
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    layout: Layout,
    job: JobDetail,
    entries: Vec<Entry>,
}

/// `GET /jobs/{id}`: one job: its arguments, attempts, error history, the worker that ran it,
/// its audit trail, and retry / discard when they apply.
pub(crate) async fn job_page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Result<Response, DashError> {
    let id = crate::api::job_id(&id)?;
    let job = state.queue.get(id).await?.ok_or_else(|| {
        DashError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("job {id} not found"),
        )
    })?;
    let audit = state
        .store
        .audit_list(&AuditList {
            target: Some(format!("job:{id}")),
            limit: WORKER_AUDIT,
            ..Default::default()
        })
        .await?;
    html(&JobPage {
        layout: Layout::new(
            &session,
            format!("Job {id}"),
            "queues",
            "/live?page=none".into(),
        ),
        job: JobDetail::new(&job, session.allows(Role::Operator)),
        entries: audit.iter().map(Entry::new).collect(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobSearch {
    q: Option<String>,
}

/// A job in a search's results.
#[derive(Debug)]
pub(crate) struct JobLine {
    pub(crate) id: i64,
    pub(crate) queue: String,
    pub(crate) kind: String,
    pub(crate) state: &'static str,
    pub(crate) attempts: String,
    pub(crate) created: Stamp,
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    layout: Layout,
    q: String,
    jobs: Vec<JobLine>,
    scanned: u32,
}

/// `GET /jobs?q=`: an id opens that job's page; anything else is a kind, looked for among the
/// newest [`JOB_SEARCH_SCANNED`] jobs.
pub(crate) async fn jobs_page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    query: Result<Query<JobSearch>, QueryRejection>,
) -> Result<Response, DashError> {
    let Query(search) = query.map_err(bad_query)?;
    let q = search.q.unwrap_or_default().trim().to_string();
    if let Ok(id) = crate::api::job_id(&q)
        && let Ok(location) = HeaderValue::from_str(&format!("/jobs/{id}"))
    {
        let mut response = StatusCode::SEE_OTHER.into_response();
        response.headers_mut().insert(header::LOCATION, location);
        return Ok(response);
    }
    let jobs = if q.is_empty() {
        Vec::new()
    } else {
        let kind = q.to_ascii_lowercase();
        state
            .queue
            .list(&JobList {
                limit: JOB_SEARCH_SCANNED,
                ..Default::default()
            })
            .await?
            .iter()
            .filter(|job| job.kind.as_str().to_ascii_lowercase().contains(&kind))
            .take(JOB_SEARCH_SHOWN)
            .map(|job| JobLine {
                id: job.id,
                queue: job.queue.as_str().to_string(),
                kind: job.kind.as_str().to_string(),
                state: job.state.as_str(),
                attempts: format!("{}/{}", job.attempt, job.max_attempts),
                created: Stamp(job.created_at),
            })
            .collect()
    };
    html(&JobsPage {
        layout: Layout::new(&session, "Jobs", "queues", "/live?page=none".into()),
        q,
        jobs,
        scanned: JOB_SEARCH_SCANNED,
    })
}

// ---------------------------------------------------------------- health

/// One check as the Health page shows it.
#[derive(Debug, Clone)]
pub(crate) struct CheckLine {
    pub(crate) name: &'static str,
    pub(crate) status: &'static str,
    pub(crate) reason: String,
    /// The value with its unit, or a dash when nothing was measured.
    pub(crate) value: String,
}

/// A worker or a chain, with its checks.
#[derive(Debug, Clone)]
pub(crate) struct Subject {
    pub(crate) name: String,
    pub(crate) status: &'static str,
    /// What it is, for people ("tron · deposit · running", "node unhealthy since …").
    pub(crate) detail: String,
    pub(crate) checks: Vec<CheckLine>,
}

/// The chains or the workers.
#[derive(Debug, Clone)]
pub(crate) struct Section {
    pub(crate) id: &'static str,
    pub(crate) title: &'static str,
    pub(crate) column: &'static str,
    pub(crate) empty: &'static str,
    pub(crate) subjects: Vec<Subject>,
}

/// The health checker's report, or why there is none.
#[derive(Debug, Clone)]
pub(crate) struct HealthView {
    pub(crate) status: &'static str,
    pub(crate) evaluated: Option<Stamp>,
    pub(crate) error: Option<String>,
    pub(crate) sections: Vec<Section>,
}

fn check_lines(checks: &[domain::health::CheckResult]) -> Vec<CheckLine> {
    checks
        .iter()
        .map(|check| CheckLine {
            name: check.name,
            status: check.level.as_str(),
            reason: check.reason.clone(),
            value: if check.value < 0 {
                "\u{2014}".into()
            } else {
                format!("{} {}", check.value, check.unit)
            },
        })
        .collect()
}

/// Judges now, with the monitor the API and the control plane's actions share.
pub(crate) async fn health_view(state: &AppState) -> HealthView {
    let report = match state
        .options
        .health
        .evaluate(&state.store, Utc::now())
        .await
    {
        Ok(report) => report,
        Err(error) => {
            tracing::debug!(%error, "dashboard: the health report could not be read");
            // No report is never healthy.
            return HealthView {
                status: "unhealthy",
                evaluated: None,
                error: Some(
                    "no report: the database did not answer; the page tries again every second"
                        .into(),
                ),
                sections: Vec::new(),
            };
        }
    };
    let chains = report
        .chains
        .iter()
        .map(|chain| Subject {
            name: chain.chain.as_str().to_string(),
            status: chain.level.as_str(),
            detail: match (chain.node_level, chain.node_unhealthy_since) {
                (None, _) => "no node configured".into(),
                (Some(_), Some(since)) => format!(
                    "node unhealthy since {}",
                    since.format("%Y-%m-%d %H:%M:%S UTC")
                ),
                (Some(level), None) => format!("node {level}"),
            },
            checks: check_lines(&chain.checks),
        })
        .collect();
    let workers = report
        .workers
        .iter()
        .map(|worker| Subject {
            name: worker.id.to_string(),
            status: worker.level.as_str(),
            detail: format!(
                "{} \u{b7} {} \u{b7} {}",
                worker.chain, worker.kind, worker.worker_status
            ),
            checks: check_lines(&worker.checks),
        })
        .collect();
    HealthView {
        status: report.level.as_str(),
        evaluated: Some(Stamp(report.evaluated_at)),
        error: None,
        sections: vec![
            Section {
                id: "chains",
                title: "Chains",
                column: "Chain",
                empty: "No chain to judge: no node is configured, and no hot wallet balance or unfinished withdrawal is on record.",
                subjects: chains,
            },
            Section {
                id: "workers",
                title: "Workers",
                column: "Worker",
                empty: "No worker to judge (offline workers are not judged).",
                subjects: workers,
            },
        ],
    }
}

/// The autoscaled queues, or why they cannot be read.
pub(crate) async fn scaling_view(
    state: &AppState,
) -> Result<Vec<crate::scaling::QueueScaling>, DashError> {
    crate::scaling::status(&state.store, state.queue.as_ref(), &state.options.autoscale)
        .await
        .map_err(|error| match error {
            crate::scaling::ScalingError::Store(error) => DashError::from(error),
            crate::scaling::ScalingError::Queue(error) => DashError::from(error),
        })
}

#[derive(Template)]
#[template(path = "health_report.html")]
pub(crate) struct HealthReportFragment<'a> {
    pub(crate) view: &'a HealthView,
}

#[derive(Template)]
#[template(path = "autoscale.html")]
pub(crate) struct AutoscaleFragment<'a> {
    pub(crate) queues: &'a [crate::scaling::QueueScaling],
}

#[derive(Template)]
#[template(path = "health_page.html")]
struct HealthPage {
    layout: Layout,
    view: HealthView,
    queues: Vec<crate::scaling::QueueScaling>,
}

/// `GET /health`: every worker's and chain's checks, and the autoscaler's policies and
/// recent decisions; both follow on the live stream.
pub(crate) async fn health_page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Result<Response, DashError> {
    let view = health_view(&state).await;
    let queues = scaling_view(&state).await?;
    html(&HealthPage {
        layout: Layout::new(&session, "Health", "health", "/live?page=health".into()),
        view,
        queues,
    })
}

// ---------------------------------------------------------------- audit

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    layout: Layout,
    entries: Vec<Entry>,
    first_page: bool,
    older: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    before_id: Option<i64>,
}

/// `GET /audit`: the newest entries first, fifty a page; new ones appear live on the first.
pub(crate) async fn audit_page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, DashError> {
    let Query(query) = query.map_err(bad_query)?;
    let rows = state
        .store
        .audit_list(&AuditList {
            before_id: query.before_id,
            limit: AUDIT_PAGE,
            ..Default::default()
        })
        .await?;
    let older = (rows.len() == AUDIT_PAGE as usize)
        .then(|| rows.last().map(|row| row.id))
        .flatten();
    let newest = rows.first().map_or(0, |row| row.id);
    let live = if query.before_id.is_none() {
        format!("/live?page=audit&after={newest}")
    } else {
        // An older page does not change: its stream only keeps the connection indicator.
        "/live?page=none".to_string()
    };
    html(&AuditPage {
        layout: Layout::new(&session, "Audit log", "audit", live),
        entries: rows.iter().map(Entry::new).collect(),
        first_page: query.before_id.is_none(),
        older,
    })
}

// ---------------------------------------------------------------- withdrawals

/// A long hash or address cut to its ends ("3f2a9c…b71e04"); the page keeps the whole in a
/// `title` and a copyable element.
pub(crate) fn shorten(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= 16 {
        return text.to_string();
    }
    let head: String = chars[..8].iter().collect();
    let tail: String = chars[chars.len() - 6..].iter().collect();
    format!("{head}…{tail}")
}

/// A reason cut to what fits under a badge; the whole stays in the cell's `title`.
fn cut(text: &str) -> String {
    const SHOWN: usize = 48;
    if text.chars().count() <= SHOWN {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(SHOWN - 1).collect::<String>())
    }
}

/// One row of the withdrawals list.
#[derive(Debug)]
pub(crate) struct WithdrawalLine {
    pub(crate) id: i64,
    pub(crate) chain: &'static str,
    pub(crate) asset: String,
    pub(crate) amount: String,
    pub(crate) to: String,
    pub(crate) to_short: String,
    pub(crate) reference: String,
    pub(crate) state: &'static str,
    /// Why it is where it is (failed, manual review, waiting for funds), cut for a table cell.
    pub(crate) reason: Option<String>,
    pub(crate) reason_short: String,
    pub(crate) txid: Option<String>,
    pub(crate) txid_short: String,
    pub(crate) confirmations: i64,
    pub(crate) created: Stamp,
    pub(crate) updated: Stamp,
}

impl WithdrawalLine {
    pub(crate) fn new(row: &WithdrawalRow, intake: &crate::withdrawals::Intake) -> Self {
        WithdrawalLine {
            id: row.id,
            chain: row.chain.as_str(),
            asset: row.asset.clone(),
            amount: crate::withdrawals::amount_text(row, intake),
            to: row.destination.clone(),
            to_short: shorten(&row.destination),
            reference: row.reference.clone(),
            state: row.state.as_str(),
            reason: row.error.clone(),
            reason_short: row.error.as_deref().map(cut).unwrap_or_default(),
            txid: row.txid.clone(),
            txid_short: row.txid.as_deref().map(shorten).unwrap_or_default(),
            confirmations: row.confirmations,
            created: Stamp(row.created_at),
            updated: Stamp(row.updated_at),
        }
    }
}

/// The page's filters, as on its address (`state`, `chain`) and where the page starts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WithdrawalFilter {
    pub(crate) state: Option<String>,
    pub(crate) chain: Option<String>,
    pub(crate) before_id: Option<i64>,
}

impl WithdrawalFilter {
    /// The store's list for these filters (one page), or a clear error for a bad one.
    pub(crate) fn list(&self) -> Result<WithdrawalList, DashError> {
        Ok(WithdrawalList {
            state: choice("state", self.state.as_deref())?,
            chain: choice("chain", self.chain.as_deref())?,
            reference: None,
            before_id: self.before_id,
            limit: WITHDRAWALS_PAGE,
        })
    }
}

/// The filters as a query string (`state=failed&chain=tron&`), to carry on to the next page.
fn withdrawal_query(list: &WithdrawalList) -> String {
    let mut query = String::new();
    if let Some(state) = list.state {
        query.push_str(&format!("state={state}&"));
    }
    if let Some(chain) = list.chain {
        query.push_str(&format!("chain={chain}&"));
    }
    query
}

/// The list of withdrawals with its pager: what the live stream sends again, whole, when any
/// row of it changes (a new withdrawal, a move, more confirmations).
#[derive(Debug)]
pub(crate) struct WithdrawalTable {
    pub(crate) lines: Vec<WithdrawalLine>,
    pub(crate) filtered: bool,
    pub(crate) first_page: bool,
    /// The filters as a query string, for the pager's links.
    pub(crate) query: String,
    /// The next (older) page starts below this id.
    pub(crate) older: Option<i64>,
}

#[derive(Template)]
#[template(path = "withdrawal_table.html")]
pub(crate) struct WithdrawalTableFragment<'a> {
    pub(crate) table: &'a WithdrawalTable,
}

/// The list as the page shows it for `list` (its filters and page).
pub(crate) async fn withdrawal_table(
    state: &AppState,
    list: &WithdrawalList,
) -> Result<WithdrawalTable, DashError> {
    let rows = state.store.withdrawal_list(list).await?;
    let older = (rows.len() == list.limit as usize)
        .then(|| rows.last().map(|row| row.id))
        .flatten();
    Ok(WithdrawalTable {
        lines: rows
            .iter()
            .map(|row| WithdrawalLine::new(row, &state.options.intake))
            .collect(),
        filtered: list.state.is_some() || list.chain.is_some(),
        first_page: list.before_id.is_none(),
        query: withdrawal_query(list),
        older,
    })
}

#[derive(Template)]
#[template(path = "withdrawals.html")]
struct WithdrawalsPage {
    layout: Layout,
    filters: Vec<Filter>,
    filtered: bool,
    table: WithdrawalTable,
}

/// `GET /withdrawals`: newest first, fifty a page, filtered by state and chain; the first
/// page follows every change live.
pub(crate) async fn withdrawals_page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    query: Result<Query<WithdrawalFilter>, QueryRejection>,
) -> Result<Response, DashError> {
    let Query(filter) = query.map_err(bad_query)?;
    let list = filter.list()?;
    let table = withdrawal_table(&state, &list).await?;
    let (filters, live) = state_chain_view(
        "withdrawals",
        WithdrawalState::ALL.iter().map(|each| each.as_str()),
        list.state.map(WithdrawalState::as_str),
        list.chain,
        list.before_id.is_some(),
    );
    html(&WithdrawalsPage {
        layout: Layout::new(&session, "Withdrawals", "withdrawals", live),
        filters,
        filtered: table.filtered,
        table,
    })
}

/// A transaction a withdrawal had, as its audit trail and row tell it.
#[derive(Debug)]
pub(crate) struct WithdrawalTx {
    pub(crate) txid: String,
    /// The state the withdrawal moved to when this txid was last seen.
    pub(crate) state: String,
    pub(crate) block_height: Option<i64>,
    pub(crate) confirmations: Option<i64>,
    pub(crate) first_seen: Option<Stamp>,
    /// The withdrawal's txid now (the latest attempt's, then the one that landed).
    pub(crate) current: bool,
}

/// Every txid in `trail` (oldest first), each with what the last entry naming it said, and the
/// row's own (fresher) figures for its current one.
pub(crate) fn transactions(row: &WithdrawalRow, trail: &[AuditRow]) -> Vec<WithdrawalTx> {
    let mut txs: Vec<WithdrawalTx> = Vec::new();
    for entry in trail {
        let Some(txid) = entry.details["txid"].as_str() else {
            continue;
        };
        let state = entry.details["to"].as_str().unwrap_or_default().to_string();
        let block_height = entry.details["block_height"].as_i64();
        let confirmations = entry.details["confirmations"].as_i64();
        match txs.iter_mut().find(|tx| tx.txid == txid) {
            Some(tx) => {
                tx.state = state;
                tx.block_height = block_height;
                tx.confirmations = confirmations;
            }
            None => txs.push(WithdrawalTx {
                txid: txid.to_string(),
                state,
                block_height,
                confirmations,
                first_seen: Some(Stamp(entry.at)),
                current: false,
            }),
        }
    }
    if let Some(txid) = &row.txid {
        let now = match txs.iter_mut().find(|tx| &tx.txid == txid) {
            Some(tx) => tx,
            None => {
                txs.push(WithdrawalTx {
                    txid: txid.clone(),
                    state: String::new(),
                    block_height: None,
                    confirmations: None,
                    first_seen: None,
                    current: false,
                });
                txs.last_mut().expect("just pushed")
            }
        };
        now.current = true;
        now.state = row.state.as_str().to_string();
        now.block_height = row.block_height;
        now.confirmations = Some(row.confirmations);
    }
    txs
}

/// One withdrawal: its fields, transactions and audit trail; what the live stream sends
/// again when any of it changes.
#[derive(Debug)]
pub(crate) struct WithdrawalDetail {
    pub(crate) line: WithdrawalLine,
    pub(crate) amount_base_units: String,
    pub(crate) idempotency_key: String,
    pub(crate) created_by: String,
    pub(crate) block_height: Option<i64>,
    pub(crate) fee: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) txs: Vec<WithdrawalTx>,
    pub(crate) entries: Vec<Entry>,
    /// Every approval and rejection, oldest first.
    pub(crate) decisions: Vec<super::money::DecisionLine>,
    /// While it waits for approval: what this operator may do about it.
    pub(crate) held: Option<super::money::Held>,
    /// In manual review: what this operator may do about it.
    pub(crate) review: Option<super::money::Reviewable>,
    /// Every review asked for it, oldest first.
    pub(crate) reviews: Vec<super::money::ReviewLine>,
}

#[derive(Template)]
#[template(path = "withdrawal_detail.html")]
pub(crate) struct WithdrawalDetailFragment<'a> {
    pub(crate) detail: &'a WithdrawalDetail,
}

/// Withdrawal `id` as its page shows it to `session`, or `None` when there is no such
/// withdrawal.
pub(crate) async fn withdrawal_detail(
    state: &AppState,
    session: &Session,
    id: i64,
) -> Result<Option<WithdrawalDetail>, DashError> {
    let Some(row) = state.store.withdrawal_get(id).await? else {
        return Ok(None);
    };
    let mut trail = state
        .store
        .audit_list(&AuditList {
            target: Some(row.payout_key()),
            limit: WITHDRAWAL_AUDIT_MAX,
            ..Default::default()
        })
        .await?;
    // Newest first from the store; the transactions are told oldest first.
    trail.reverse();
    let txs = transactions(&row, &trail);
    trail.reverse();
    let approvals = state.store.withdrawal_approvals(id).await?;
    let held = (row.state == WithdrawalState::Approval)
        .then(|| super::money::Held::new(&row, &approvals, state, session, Utc::now()));
    let reviews = state.store.withdrawal_reviews(id).await?;
    let review = (row.state == WithdrawalState::ManualReview)
        .then(|| super::money::Reviewable::new(&row, &reviews, state, session));
    Ok(Some(WithdrawalDetail {
        line: WithdrawalLine::new(&row, &state.options.intake),
        amount_base_units: row.amount.clone(),
        idempotency_key: row.idempotency_key.clone(),
        created_by: row.created_by.clone(),
        block_height: row.block_height,
        fee: row.fee.clone(),
        error: row.error.clone(),
        txs,
        entries: trail.iter().map(Entry::new).collect(),
        decisions: approvals
            .iter()
            .map(super::money::DecisionLine::new)
            .collect(),
        held,
        review,
        reviews: reviews.iter().map(super::money::ReviewLine::new).collect(),
    }))
}

#[derive(Template)]
#[template(path = "withdrawal.html")]
struct WithdrawalPage {
    layout: Layout,
    detail: WithdrawalDetail,
}

/// `GET /withdrawals/{id}`: one withdrawal, live. A path that is not a canonical decimal id
/// names no withdrawal (404), like the API's.
pub(crate) async fn withdrawal_page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Result<Response, DashError> {
    let id = crate::withdrawals::withdrawal_id(&id)?;
    let detail = withdrawal_detail(&state, &session, id)
        .await?
        .ok_or_else(|| {
            DashError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("withdrawal {id} not found"),
            )
        })?;
    let live = format!("/live?page=withdrawal&id={id}");
    html(&WithdrawalPage {
        layout: Layout::new(&session, format!("Withdrawal {id}"), "withdrawals", live),
        detail,
    })
}

impl From<DashError> for ApiError {
    fn from(error: DashError) -> Self {
        error.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_on_characters() {
        assert_eq!(shorten("TLa2f6VPqDgRE67v"), "TLa2f6VPqDgRE67v");
        assert_eq!(shorten(&"ab".repeat(32)), "abababab…ababab");
        assert_eq!(cut("short"), "short");
        let long = "é".repeat(100);
        let shown = cut(&long);
        assert_eq!(shown.chars().count(), 48);
        assert!(shown.ends_with('…'));
    }
}

// ---------------------------------------------------------------- webhooks

/// Deliveries a webhooks page lists.
const DELIVERIES_PAGE: u32 = 100;

/// One endpoint's deliveries counted by state.
#[derive(Debug, Default)]
pub(crate) struct EndpointCounts {
    pub(crate) endpoint: String,
    pub(crate) pending: i64,
    pub(crate) delivered: i64,
    pub(crate) failed: i64,
    /// The oldest pending event, when one waits.
    pub(crate) oldest_pending: Option<Stamp>,
}

/// One delivery, as the webhooks page lists it.
#[derive(Debug)]
pub(crate) struct DeliveryLine {
    pub(crate) id: i64,
    pub(crate) endpoint: String,
    pub(crate) state: &'static str,
    pub(crate) attempts: i32,
    pub(crate) kind: String,
    pub(crate) subject: String,
    pub(crate) event_id: String,
    pub(crate) created: Stamp,
    pub(crate) last_attempt: Option<Stamp>,
    pub(crate) next_attempt: Option<Stamp>,
    pub(crate) last_error: String,
}

#[derive(Template)]
#[template(path = "webhooks.html")]
struct WebhooksPage {
    layout: Layout,
    endpoints: Vec<EndpointCounts>,
    deliveries: Vec<DeliveryLine>,
    state: String,
    endpoint: String,
    may_act: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhooksQuery {
    state: Option<String>,
    endpoint: Option<String>,
}

/// `GET /webhooks`: each endpoint's deliveries by state, and the latest deliveries (failed
/// ones by default: what needs a look), with Replay.
pub(crate) async fn webhooks_page(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    query: Result<Query<WebhooksQuery>, QueryRejection>,
) -> Result<Response, DashError> {
    let Query(query) = query.map_err(bad_query)?;
    let filter = query.state.filter(|text| !text.is_empty());
    let delivery_state = match filter.as_deref() {
        None => Some(store::DeliveryState::Failed),
        Some("all") => None,
        Some(text) => Some(store::DeliveryState::parse(text).ok_or_else(|| {
            DashError(ApiError::invalid(format!(
                "state: {text:?} is not one of all, pending, delivered, failed"
            )))
        })?),
    };
    let endpoint = query.endpoint.filter(|text| !text.is_empty());
    if let Some(endpoint) = &endpoint {
        domain::check_text("endpoint", endpoint, domain::Controls::None)
            .map_err(|error| DashError(ApiError::invalid(error.to_string())))?;
    }
    let rows = state
        .store
        .webhook_deliveries(&store::DeliveryList {
            endpoint: endpoint.clone(),
            state: delivery_state,
            subject: None,
            before: None,
            limit: DELIVERIES_PAGE,
        })
        .await?;
    let mut endpoints: Vec<EndpointCounts> = Vec::new();
    for count in state.store.webhook_counts().await? {
        let index = match endpoints
            .iter()
            .position(|each| each.endpoint == count.endpoint)
        {
            Some(index) => index,
            None => {
                endpoints.push(EndpointCounts {
                    endpoint: count.endpoint.clone(),
                    ..EndpointCounts::default()
                });
                endpoints.len() - 1
            }
        };
        let line = &mut endpoints[index];
        match count.state {
            store::DeliveryState::Pending => {
                line.pending = count.count;
                line.oldest_pending = count.oldest.map(Stamp);
            }
            store::DeliveryState::Delivered => line.delivered = count.count,
            store::DeliveryState::Failed => line.failed = count.count,
        }
    }
    let deliveries = rows
        .iter()
        .map(|row| DeliveryLine {
            id: row.id,
            endpoint: row.endpoint.clone(),
            state: row.state.as_str(),
            attempts: row.attempts,
            kind: row.event.kind.clone(),
            subject: row.event.subject.clone(),
            event_id: row.event.event_id.clone(),
            created: Stamp(row.event.created_at),
            last_attempt: row.last_attempt_at.map(Stamp),
            next_attempt: (row.state == store::DeliveryState::Pending)
                .then_some(Stamp(row.next_attempt_at)),
            last_error: row.last_error.clone().unwrap_or_default(),
        })
        .collect();
    html(&WebhooksPage {
        layout: Layout::new(&session, "Webhooks", "webhooks", "/live?page=none".into()),
        endpoints,
        deliveries,
        state: filter.unwrap_or_else(|| "failed".into()),
        endpoint: endpoint.unwrap_or_default(),
        may_act: session.allows(Role::Operator),
    })
}

/// What a webhooks page's Replay button names.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ReplayTarget {
    /// `POST /webhooks/deliveries/{id}/replay`.
    Delivery,
    /// `POST /webhooks/endpoints/{name}/replay-failed`.
    FailedOf,
}

/// Replays through the API's own code, then reloads the page (it has no live stream).
pub(crate) async fn webhook_replay(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(target): Path<String>,
    headers: HeaderMap,
    replay: ReplayTarget,
) -> Result<Response, DashError> {
    let select = match replay {
        ReplayTarget::Delivery => {
            store::ReplaySelect::Ids(vec![crate::api::row_id("delivery", &target)?])
        }
        ReplayTarget::FailedOf => store::ReplaySelect::Failed {
            endpoint: Some(target),
        },
    };
    crate::webhooks::replay(&state, &session.actor(), &select).await?;
    if super::is_htmx(&headers) {
        let mut response = StatusCode::NO_CONTENT.into_response();
        response
            .headers_mut()
            .insert("hx-refresh", axum::http::HeaderValue::from_static("true"));
        Ok(response)
    } else {
        Ok(back(&headers))
    }
}
