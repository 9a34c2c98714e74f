//! A webhook receiver for the tests that follow the events the exchange's backend hears
//! (deposits, sweeps): it answers 204 to every post whose signature checks out and records
//! the event with the time it arrived. Delivery is at least once, so an event may arrive
//! twice; `events` keeps the first copy of each id.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// The shared secret of the receiver's endpoint.
pub const SECRET: &str = "whsec-proof-0123456789abcdef";

/// One event as it arrived.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The whole posted event: `id`, `type`, `subject`, `sequence`, `data`.
    pub event: Value,
    pub received_at: SystemTime,
}

/// What the receiver accepted, in arrival order; posts with a bad signature are counted.
#[derive(Default)]
pub struct Hooks {
    arrivals: Mutex<Vec<Arrival>>,
    bad_signatures: Mutex<usize>,
}

impl Hooks {
    /// Starts the receiver on a free loopback port; the endpoint's URL.
    pub async fn start() -> (Arc<Hooks>, String) {
        let hooks = Arc::new(Hooks::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: SocketAddr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(Arc::clone(&hooks));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (hooks, format!("http://{address}/hook"))
    }

    /// The configuration lines of an endpoint posting `events` (patterns) to `url`.
    pub fn config(url: &str, events: &str) -> String {
        format!(
            "[[webhooks]]\nname = \"backend\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n\
             events = [\"{events}\"]\ntimeout = 2\nretry_base = 0.2\nretry_max_delay = 1\n"
        )
    }

    /// Every event received, the first copy of each id, in arrival order.
    pub fn events(&self) -> Vec<Arrival> {
        let mut seen = std::collections::HashSet::new();
        self.arrivals
            .lock()
            .unwrap()
            .iter()
            .filter(|arrival| seen.insert(arrival.event["id"].as_str().unwrap_or("").to_string()))
            .cloned()
            .collect()
    }

    pub fn bad_signatures(&self) -> usize {
        *self.bad_signatures.lock().unwrap()
    }
}

/// The signature header checked as docs/webhooks.md tells receivers to: HMAC-SHA256 over
/// `t.body` with the shared `secret`, in constant time, and a timestamp within five minutes.
pub fn verified(headers: &HeaderMap, body: &[u8], secret: &str) -> bool {
    let Some(header) = headers
        .get("coinsensei-signature")
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let mut timestamp = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => signature = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - timestamp).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

async fn receive(State(hooks): State<Arc<Hooks>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let received_at = SystemTime::now();
    if !verified(&headers, &body, SECRET) {
        *hooks.bad_signatures.lock().unwrap() += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    hooks
        .arrivals
        .lock()
        .unwrap()
        .push(Arrival { event, received_at });
    StatusCode::NO_CONTENT
}
