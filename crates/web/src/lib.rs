//! The control plane's HTTP surface. Today: liveness and readiness probes. The admin API and
//! the dashboard (later issues) mount on the same router.
//!
//! - `GET /healthz`: the process is up and serving (no database round trip, so a database
//!   outage does not get the control plane killed by its orchestrator).
//! - `GET /readyz`: the database answers and its schema is current; 503 with the reason
//!   otherwise, so a load balancer stops sending traffic to an instance that cannot serve it.

pub mod api;
pub mod auth;
pub mod dto;

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long a readiness probe waits for the database before it answers 503.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) store: Store,
    pub(crate) queue: std::sync::Arc<dyn queue::Backend>,
}

/// The control plane's router.
pub fn router(store: Store, queue: std::sync::Arc<dyn queue::Backend>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(api::routes())
        .with_state(AppState { store, queue })
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
    queue: std::sync::Arc<dyn queue::Backend>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let address: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(address = ?address, "control plane listening");
    axum::serve(listener, router(store, queue))
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
        let (status, _) = get_json(router(store.clone(), sql(&store)), "/healthz").await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = get_json(router(store.clone(), sql(&store)), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body["reason"]
                .as_str()
                .unwrap()
                .contains("coinsensei migrate"),
            "{body}"
        );

        store.migrate().await.unwrap();
        let (status, body) = get_json(router(store.clone(), sql(&store)), "/readyz").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let dialect = match db.backend {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        };
        assert_eq!(body["database"], dialect);

        // The database goes away: still alive, no longer ready.
        store.close().await;
        let (status, _) = get_json(router(store.clone(), sql(&store)), "/healthz").await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = get_json(router(store.clone(), sql(&store)), "/readyz").await;
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
