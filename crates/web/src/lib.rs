//! The control plane's HTTP surface.
//!
//! - `GET /healthz`: the process is up and serving (no database round trip, so a database
//!   outage does not get the control plane killed by its orchestrator).
//! - `GET /readyz`: the database answers and its schema is current; 503 with the reason
//!   otherwise, so a load balancer stops sending traffic to an instance that cannot serve it.
//! - `GET /metrics`: Prometheus text format; behind a viewer token unless `metrics_public`.
//! - `/api/admin/...`: the admin API ([`api`]), described by `GET /api/openapi.json`.
//! - `/`, `/login`, `/workers/...`, `/queues`, `/audit`, `/live`, `/assets/...`: the operator
//!   dashboard ([`dashboard`]), server-rendered HTML behind a session cookie.
//!
//! Every error under the router is JSON, `{"error": {"code", "message"}}`, including the ones
//! axum makes by itself (unknown route, wrong method, oversized body): [`json_errors`]. The
//! dashboard's own error pages are HTML and pass through as they are.

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod dto;
pub mod events;
pub mod metrics;
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

/// How long a readiness probe waits for the database before it answers 503.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How the control plane's HTTP surface behaves; `Default` is what `coinsensei up` uses.
#[derive(Debug, Clone)]
pub struct WebOptions {
    /// Serve `/metrics` without a token (for a Prometheus on a private network).
    pub metrics_public: bool,
    /// The longest a request may take to produce its response head; then 503 `timeout`.
    pub request_timeout: Duration,
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
}

impl Default for WebOptions {
    fn default() -> Self {
        WebOptions {
            metrics_public: false,
            request_timeout: Duration::from_secs(10),
            body_limit: 64 * 1024,
            auth_failures_per_minute: 30,
            heartbeat_interval: Duration::from_secs(5),
            public_url: None,
            intake: Arc::default(),
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
    let path = request.uri().path();
    let dashboard =
        !(path.starts_with("/api/") || matches!(path, "/metrics" | "/healthz" | "/readyz"));
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

/// Serves the router on `listener` until `cancel` fires, then finishes open requests.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    queue: Arc<dyn queue::Backend>,
    options: &WebOptions,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let address: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(address = ?address, "control plane listening");
    let app = router_until(store, queue, options, cancel.clone())
        .into_make_service_with_connect_info::<SocketAddr>();
    // Events are small writes: without TCP_NODELAY, Nagle's algorithm holds one back until
    // the client's delayed ACK of the previous one (about 40 ms).
    let listener =
        axum::serve::ListenerExt::tap_io(listener, |stream: &mut tokio::net::TcpStream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY on a connection");
            }
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
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
