//! The control plane's HTTP surface.
//!
//! - `GET /healthz`: the process is up and serving (no database round trip, so a database
//!   outage does not get the control plane killed by its orchestrator).
//! - `GET /readyz`: the database answers and its schema is current; 503 with the reason
//!   otherwise, so a load balancer stops sending traffic to an instance that cannot serve it.
//! - `GET /metrics`: Prometheus text format; behind a viewer token unless `metrics_public`.
//! - `/api/admin/...`: the admin API ([`api`]), described by `GET /api/openapi.json`.
//! - `/`, `/login`, `/workers/...`, `/queues`, `/health`, `/audit`, `/live`, `/assets/...`: the operator
//!   dashboard ([`dashboard`]), server-rendered HTML behind a session cookie.
//!
//! Every phase of a connection is bounded ([`serve`]): its request heads and the idle time
//! between them ([`WebOptions::header_read_timeout`]), each body ([`WebOptions::body_read_timeout`]:
//! 408 and the connection closed, before the request reaches a handler), each handler
//! ([`WebOptions::request_timeout`]), and the number of connections open at once, below the
//! process's descriptor limit so the database and the workers keep theirs.
//!
//! Every error under the router is JSON, `{"error": {"code", "message"}}`, including the ones
//! axum makes by itself (unknown route, wrong method, oversized body): [`json_errors`]. The
//! dashboard's own error pages are HTML and pass through as they are.

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod deposits;
pub mod destinations;
pub mod dto;
pub mod events;
pub mod health;
pub mod ledger;
pub mod metrics;
pub mod policies;
pub mod scaling;
pub mod sweeps;
pub mod webhooks;
pub mod withdrawals;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Layer;

/// How long a readiness probe waits for the database before it answers 503.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How the control plane's HTTP surface behaves; `Default` is what `coinsensei up` uses.
#[derive(Debug, Clone)]
pub struct WebOptions {
    /// Serve `/metrics` without a token (for a Prometheus on a private network).
    pub metrics_public: bool,
    /// The longest a handler may take to produce its response head once the request is read;
    /// then 503 `timeout`.
    pub request_timeout: Duration,
    /// The longest a client may take to send a request head, and a kept-alive connection
    /// may stay idle; then the connection is closed.
    pub header_read_timeout: Duration,
    /// The longest a client may take to send a request body; then 408 `timeout` and the
    /// connection is closed, with nothing of the request applied.
    pub body_read_timeout: Duration,
    /// HTTP connections open at once (lowered to the process's descriptor limit less
    /// [`domain::limits::HTTP_DESCRIPTORS_RESERVED`]); more wait in the listen backlog.
    pub connections_max: usize,
    /// The largest request body accepted; larger ones get 413 `too_large`.
    pub body_limit: usize,
    /// Failed authentications allowed per client address per minute; then 429.
    pub auth_failures_per_minute: u32,
    /// The workers' heartbeat interval: a worker silent for two of them is reported stale in
    /// its health summary.
    pub heartbeat_interval: Duration,
    /// The origin browsers reach the dashboard at (`https://ops.example.com`, scheme and host
    /// and a port if not the default), when a reverse proxy in front rewrites `Host`. When
    /// set, dashboard POSTs must come from it and it decides whether cookies are `Secure`;
    /// when not, a POST's origin must name the request's `Host`.
    pub public_url: Option<String>,
    /// What withdrawal requests are checked against (catalogue, network, our own addresses).
    pub intake: Arc<withdrawals::Intake>,
    /// What deposit-address requests derive from (a deposit xpub per chain) and how deposits
    /// are shown.
    pub deposits: Arc<deposits::DepositIntake>,
    /// The health checker `GET /api/admin/health` and `/metrics` ask (shared with the
    /// control plane's restart action, so all agree).
    pub health: Arc<health::HealthMonitor>,
    /// The queues the autoscaler of `coinsensei up` scales, for the dashboard's Health page.
    pub autoscale: Vec<scaling::ScaledQueue>,
}

impl Default for WebOptions {
    fn default() -> Self {
        WebOptions {
            metrics_public: false,
            request_timeout: Duration::from_secs(10),
            header_read_timeout: domain::limits::HTTP_HEADER_READ_TIMEOUT,
            body_read_timeout: domain::limits::HTTP_BODY_READ_TIMEOUT,
            connections_max: domain::limits::HTTP_CONNECTIONS_MAX,
            body_limit: 64 * 1024,
            auth_failures_per_minute: 30,
            heartbeat_interval: Duration::from_secs(5),
            public_url: None,
            intake: Arc::default(),
            deposits: Arc::default(),
            health: Arc::default(),
            autoscale: Vec::new(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) store: Store,
    pub(crate) queue: Arc<dyn queue::Backend>,
    pub(crate) options: Arc<WebOptions>,
    pub(crate) auth_failures: Arc<auth::FailureLimiter>,
    pub(crate) events: Arc<events::EventHub>,
    pub(crate) history: Arc<dashboard::history::History>,
    /// Fires when the server shuts down: event streams end then, or the graceful shutdown
    /// would wait for them forever.
    pub(crate) shutdown: CancellationToken,
}

/// The control plane's router.
pub fn router(store: Store, queue: Arc<dyn queue::Backend>, options: &WebOptions) -> Router {
    router_until(store, queue, options, CancellationToken::new())
}

/// The router, whose event streams end when `shutdown` fires.
fn router_until(
    store: Store,
    queue: Arc<dyn queue::Backend>,
    options: &WebOptions,
    shutdown: CancellationToken,
) -> Router {
    let state = AppState {
        events: events::EventHub::new(store.clone()),
        store,
        queue,
        auth_failures: Arc::new(auth::FailureLimiter::new(options.auth_failures_per_minute)),
        options: Arc::new(options.clone()),
        history: Arc::default(),
        shutdown,
    };
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::render))
        .merge(api::routes(&state))
        .merge(dashboard::routes(&state))
        .fallback(api::fallback)
        .layer(middleware::from_fn_with_state(state.clone(), time_limit))
        .layer(middleware::from_fn_with_state(state.clone(), read_body))
        .layer(DefaultBodyLimit::max(options.body_limit))
        .layer(middleware::from_fn(metrics::track))
        .with_state(state);
    // `json_errors` goes around the whole router, outside the method routers (which add
    // their `Allow` header on the way out).
    Router::new()
        .fallback_service(routes)
        .layer(middleware::from_fn(json_errors))
}

/// Answers 503 `timeout` when a handler has not produced its response head in time: JSON for
/// the API, the dashboard's message (shown in its message area) for the dashboard. (An event
/// stream's head comes at once; its body is not limited.)
async fn time_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = state.options.request_timeout;
    let reads = request.method() == axum::http::Method::GET;
    let dashboard = is_dashboard(request.uri().path());
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let message = if reads {
                format!("the request took longer than {limit:?}; try again")
            } else {
                // An action runs on to the end (and is audited) after its request gave up.
                format!(
                    "the request took longer than {limit:?}; the action may still take effect: look before trying again"
                )
            };
            if dashboard {
                dashboard::DashError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", message)
                    .into_response()
            } else {
                api::ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", message)
                    .into_response()
            }
        }
    }
}

/// Whether `path` belongs to the dashboard (HTML errors) rather than the API (JSON errors).
fn is_dashboard(path: &str) -> bool {
    !(path.starts_with("/api/") || matches!(path, "/metrics" | "/healthz" | "/readyz"))
}

/// Reads the whole body before anything else sees the request, within
/// [`WebOptions::body_read_timeout`] and [`WebOptions::body_limit`]. A body that does not
/// arrive in time gets 408 and the connection is closed: no handler has run, so nothing was
/// applied, and a client trickling bytes cannot hold a handler (or its database connection).
async fn read_body(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let dashboard = is_dashboard(parts.uri.path());
    let limit = state.options.body_limit;
    let error = |status: StatusCode, code: &'static str, message: String| {
        if dashboard {
            dashboard::DashError::new(status, code, message).into_response()
        } else {
            api::ApiError::new(status, code, message).into_response()
        }
    };
    let read = axum::body::to_bytes(body, limit);
    let bytes = match tokio::time::timeout(state.options.body_read_timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(read_error)) => {
            let too_large = std::error::Error::source(&read_error)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            let mut response = if too_large {
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    "the request body is too large".into(),
                )
            } else {
                tracing::debug!(error = %read_error, "could not read a request body");
                error(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    "the request body could not be read".into(),
                )
            };
            // The rest of the body is still on the wire: the connection cannot be reused.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
        Err(_) => {
            let waited = state.options.body_read_timeout;
            tracing::info!(path = ?parts.uri.path(), "a request body did not arrive in time");
            let mut response = error(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!(
                    "the request body did not arrive within {waited:?}; nothing was done: send it again"
                ),
            );
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// Turns the errors axum writes as plain text (no route, wrong method, body too large, a body
/// that is not JSON) into the API's JSON error shape, keeping the status and headers.
async fn json_errors(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    // axum names a route's methods on any answer to a method it does not take; a caller
    // refused for its token learns nothing of the route.
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        response.headers_mut().remove(header::ALLOW);
    }
    let status = response.status();
    // JSON already, or one of the dashboard's HTML answers (written for people, on purpose).
    let is_json_or_page = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| {
            value.as_bytes().starts_with(b"application/json")
                || value.as_bytes().starts_with(b"text/html")
        });
    if !(status.is_client_error() || status.is_server_error()) || is_json_or_page {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok())
        .filter(|text| !text.trim().is_empty());
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        status if status.is_server_error() => "internal",
        _ => "invalid",
    };
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = parts
                .headers
                .get(header::ALLOW)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("")
                .to_string();
            format!("this route does not take that method; it takes {allowed}")
        }
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is too large".to_string(),
        _ => text.unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("request refused")
                .to_string()
        }),
    };
    let body = json!({"error": {"code": code, "message": message}}).to_string();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    let check = async {
        state
            .store
            .ping()
            .await
            .map_err(|error| format!("database: {error}"))?;
        match state.store.migrations_pending().await {
            Ok(0) => Ok(()),
            Ok(pending) => Err(format!(
                "database schema is {pending} migration(s) behind: run `coinsensei migrate`"
            )),
            Err(error) => Err(format!("database: {error}")),
        }
    };
    let outcome = match tokio::time::timeout(READY_CHECK_TIMEOUT, check).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!(
            "database did not answer within {READY_CHECK_TIMEOUT:?}"
        )),
    };
    match outcome {
        Ok(()) => {
            Json(json!({"status": "ready", "database": state.store.dialect()})).into_response()
        }
        Err(reason) => {
            tracing::warn!(%reason, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "reason": reason})),
            )
                .into_response()
        }
    }
}

/// How long the accept loop waits after the system refused it a connection (out of
/// descriptors, say) before it tries again.
const ACCEPT_RETRY_AFTER: Duration = Duration::from_millis(100);

/// The connections [`serve`] holds at most: `configured`, lowered so that the process's
/// descriptor limit keeps [`domain::limits::HTTP_DESCRIPTORS_RESERVED`] for everything else.
pub fn connections_cap(configured: usize) -> usize {
    let reserved = domain::limits::HTTP_DESCRIPTORS_RESERVED;
    let descriptors = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| usize::try_from(soft).unwrap_or(usize::MAX))
        .unwrap_or(usize::MAX);
    configured.min(descriptors.saturating_sub(reserved)).max(1)
}

/// Serves the router on `listener` until `cancel` fires, then finishes open requests.
///
/// hyper's HTTP/1 connections, driven here rather than by `axum::serve`, which offers no
/// header timeout: a head (the first, and each one after on a kept-alive connection) must
/// arrive within [`WebOptions::header_read_timeout`], and no more than [`connections_cap`]
/// connections are open at once. Past the cap the accept loop waits for one to close, and
/// the kernel's backlog holds the newcomers; each held connection is closed within the
/// header timeout once idle, so the wait is bounded.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    queue: Arc<dyn queue::Backend>,
    options: &WebOptions,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let address: Option<SocketAddr> = listener.local_addr().ok();
    let connections_max = connections_cap(options.connections_max);
    tracing::info!(address = ?address, connections_max, "control plane listening");
    let router = router_until(store, queue, options, cancel.clone());
    let slots = Arc::new(tokio::sync::Semaphore::new(connections_max));
    let connections = tokio_util::task::TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    loop {
        let slot = tokio::select! {
            () = cancel.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection; trying again");
                    tokio::time::sleep(ACCEPT_RETRY_AFTER).await;
                    continue;
                }
            },
        };
        // Events are small writes: without TCP_NODELAY, Nagle's algorithm holds one back
        // until the client's delayed ACK of the previous one (about 40 ms).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY on a connection");
        }
        let service = hyper_util::service::TowerToHyperService::new(
            tower::util::MapRequestLayer::new(
                move |mut request: axum::http::Request<hyper::body::Incoming>| {
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    request
                },
            )
            .layer(router.clone()),
        );
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let cancel = cancel.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut connection = std::pin::pin!(connection);
            let mut closing = false;
            loop {
                tokio::select! {
                    outcome = connection.as_mut() => {
                        if let Err(error) = outcome {
                            tracing::debug!(%error, "an HTTP connection ended with an error");
                        }
                        break;
                    }
                    () = cancel.cancelled(), if !closing => {
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use testkit::{Backend, TestDb};
    use tower::ServiceExt;

    fn sql(store: &Store) -> std::sync::Arc<dyn queue::Backend> {
        std::sync::Arc::new(queue::SqlBackend::new(store.clone()))
    }

    async fn get_json(router: Router, path: &str) -> (StatusCode, serde_json::Value) {
        let response = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    async fn probes(backend: Backend) {
        let db = TestDb::new(backend).await;
        // Connected but not migrated: alive, not ready, and it says why.
        let store = Store::connect(&db.url, &store::StoreOptions::default())
            .await
            .unwrap();
        let (status, _) = get_json(
            router(store.clone(), sql(&store), &WebOptions::default()),
            "/healthz",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = get_json(
            router(store.clone(), sql(&store), &WebOptions::default()),
            "/readyz",
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body["reason"]
                .as_str()
                .unwrap()
                .contains("coinsensei migrate"),
            "{body}"
        );

        store.migrate().await.unwrap();
        let (status, body) = get_json(
            router(store.clone(), sql(&store), &WebOptions::default()),
            "/readyz",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let dialect = match db.backend {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        };
        assert_eq!(body["database"], dialect);

        // The database goes away: still alive, no longer ready.
        store.close().await;
        let (status, _) = get_json(
            router(store.clone(), sql(&store), &WebOptions::default()),
            "/healthz",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = get_json(
            router(store.clone(), sql(&store), &WebOptions::default()),
            "/readyz",
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body["reason"].as_str().unwrap().starts_with("database"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn probes_on_postgres() {
        probes(Backend::Postgres).await;
    }

    #[tokio::test]
    async fn probes_on_sqlite() {
        probes(Backend::Sqlite).await;
    }
}
