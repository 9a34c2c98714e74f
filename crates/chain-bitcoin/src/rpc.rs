//! Bitcoin Core's JSON-RPC over HTTP(S): basic authentication (user and password, or a
//! node's cookie), a timeout per call, and retries with backoff for calls that only read.
//! The credentials are never logged nor put in an error: `Debug` shows the URL without them.
//!
//! A node writes a new cookie every time it starts: a client made from the cookie *file*
//! ([`Rpc::with_cookie_file`]) reads it again when the node refuses its credentials, and
//! asks once more with the new ones, so a long-running worker outlives the node's restarts.

use std::time::Duration;

use serde_json::{Value, json};

/// What a call got: no answer (`Transport`, may be retried), or the node's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    #[error("no answer from the node: {0}")]
    Transport(String),
    #[error("node error {code}: {message}")]
    Node { code: i64, message: String },
}

impl RpcError {
    /// Whether asking again can help: no answer, or the node still warming up (-28).
    pub fn retriable(&self) -> bool {
        match self {
            RpcError::Transport(_) => true,
            RpcError::Node { code, .. } => *code == -28,
        }
    }
}

/// A JSON-RPC client of one node.
#[derive(Clone)]
pub struct Rpc {
    http: reqwest::Client,
    url: url::Url,
    /// The URL as it may be shown: scheme, host and port (a provider's key may sit in the
    /// path or query).
    shown: String,
    /// (user, password), shared by the clones: a cookie read again serves them all.
    credentials: std::sync::Arc<std::sync::RwLock<(String, String)>>,
    /// The node's cookie file, read again when the node refuses the credentials.
    cookie_file: Option<std::path::PathBuf>,
    /// Attempts of a read call before its error is returned (1: no retry).
    attempts: u32,
}

impl std::fmt::Debug for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rpc")
            .field("url", &self.shown)
            .field("credentials", &"..")
            .finish()
    }
}

impl Rpc {
    /// `url` must not carry credentials (they would show wherever the URL does); they are
    /// given apart.
    pub fn new(url: &str, user: &str, password: &str, timeout: Duration) -> Result<Rpc, String> {
        let url = url::Url::parse(url).map_err(|error| format!("bitcoin RPC URL: {error}"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "bitcoin RPC URL carries credentials: give them as rpc user and password instead"
                    .into(),
            );
        }
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "bitcoin RPC URL scheme {:?}: http or https",
                url.scheme()
            ));
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|error| format!("HTTP client: {error}"))?;
        let shown = url.origin().ascii_serialization();
        Ok(Rpc {
            http,
            url,
            shown,
            credentials: std::sync::Arc::new(std::sync::RwLock::new((
                user.to_string(),
                password.to_string(),
            ))),
            cookie_file: None,
            attempts: 4,
        })
    }

    /// From a cookie's text (`user:password`, as bitcoind writes to `.cookie`).
    pub fn with_cookie(url: &str, cookie: &str, timeout: Duration) -> Result<Rpc, String> {
        let (user, password) = parse_cookie(cookie)?;
        Rpc::new(url, &user, &password, timeout)
    }

    /// From the node's cookie file (read now, and again whenever the node refuses the
    /// credentials: a restarted node has a new cookie). The error names the file, never its
    /// content.
    pub fn with_cookie_file(
        url: &str,
        path: &std::path::Path,
        timeout: Duration,
    ) -> Result<Rpc, String> {
        let (user, password) = read_cookie(path)?;
        let mut rpc = Rpc::new(url, &user, &password, timeout)?;
        rpc.cookie_file = Some(path.to_path_buf());
        Ok(rpc)
    }

    fn credentials(&self) -> (String, String) {
        self.credentials
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// After a refusal: the cookie file read again; true when it holds other credentials
    /// than those refused (now in use), false when it cannot help.
    fn reread_cookie(&self, refused: &(String, String)) -> bool {
        let Some(path) = &self.cookie_file else {
            return false;
        };
        let fresh = match read_cookie(path) {
            Ok(fresh) => fresh,
            Err(error) => {
                tracing::warn!(%error, "the bitcoin node refused the credentials and its cookie file cannot be read again");
                return false;
            }
        };
        if fresh == *refused {
            return false;
        }
        *self
            .credentials
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        tracing::info!(node = %self.shown, "the bitcoin node's cookie changed (the node restarted): using the new one");
        true
    }

    /// The node's origin, fit to show (no path, no query).
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// One call, once: for writes (`sendrawtransaction`), whose outcome the caller reads.
    /// Refused credentials from a cookie file are read again and the call made once more
    /// (the node refused it before reading it: nothing was done twice).
    pub async fn call_once(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let credentials = self.credentials();
        match self.post(method, &params, &credentials).await {
            Err(RpcError::Node { code: -401, .. }) if self.reread_cookie(&credentials) => {
                self.post(method, &params, &self.credentials()).await
            }
            other => other,
        }
    }

    async fn post(
        &self,
        method: &str,
        params: &Value,
        (user, password): &(String, String),
    ) -> Result<Value, RpcError> {
        let body = json!({"jsonrpc": "1.0", "id": 1, "method": method, "params": params});
        let response = self
            .http
            .post(self.url.clone())
            .basic_auth(user, Some(password))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            // reqwest's message would name the whole URL: the origin only.
            .map_err(|error| {
                RpcError::Transport(format!("{}: {}", self.shown, error.without_url()))
            })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|error| {
            RpcError::Transport(format!("{}: {}", self.shown, error.without_url()))
        })?;
        let value: Value = match serde_json::from_slice(&bytes) {
            Ok(value) => value,
            Err(_) if status == reqwest::StatusCode::UNAUTHORIZED => {
                return Err(RpcError::Node {
                    code: -401,
                    message: "the node refused the RPC credentials".into(),
                });
            }
            Err(_) => {
                return Err(RpcError::Transport(format!(
                    "HTTP {status} without a JSON-RPC answer"
                )));
            }
        };
        if let Some(error) = value.get("error").filter(|error| !error.is_null()) {
            return Err(RpcError::Node {
                code: error["code"].as_i64().unwrap_or(0),
                message: error["message"].as_str().unwrap_or("").to_string(),
            });
        }
        Ok(value.get("result").cloned().unwrap_or(Value::Null))
    }

    /// A read call, retried while the error is retriable: at most `attempts` calls, with
    /// exponential backoff and full jitter between them ([`retry_delay`]).
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let mut attempt = 1;
        loop {
            match self.call_once(method, params.clone()).await {
                Err(error) if error.retriable() && attempt < self.attempts => {
                    let delay = retry_delay(attempt, jitter());
                    tracing::debug!(method, %error, attempt, ?delay, "bitcoin RPC retry");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// The same client, making at most `attempts` calls per read (1 to [`RPC_ATTEMPTS_MAX`]).
    pub fn with_attempts(mut self, attempts: u32) -> Result<Rpc, String> {
        if attempts == 0 || attempts > RPC_ATTEMPTS_MAX {
            return Err(format!(
                "bitcoin RPC attempts: 1 to {RPC_ATTEMPTS_MAX}, not {attempts}"
            ));
        }
        self.attempts = attempts;
        Ok(self)
    }
}

fn parse_cookie(cookie: &str) -> Result<(String, String), String> {
    let (user, password) = cookie
        .trim()
        .split_once(':')
        .ok_or("a cookie is user:password")?;
    Ok((user.to_string(), password.to_string()))
}

fn read_cookie(path: &std::path::Path) -> Result<(String, String), String> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        format!(
            "reading the bitcoin node's cookie file {} (is the node running, and is bitcoin_rpc_cookie_file right?): {error}",
            path.display()
        )
    })?;
    parse_cookie(&text).map_err(|error| format!("{}: {error}", path.display()))
}

/// The most calls a read makes before its error is returned.
pub const RPC_ATTEMPTS_MAX: u32 = 10;
/// The first retry's delay, doubled after each retry...
pub const RPC_RETRY_BASE: Duration = Duration::from_millis(100);
/// ...up to this.
pub const RPC_RETRY_MAX: Duration = Duration::from_secs(5);

/// The pause after failed attempt `attempt` (1-based): the exponential ceiling
/// `RPC_RETRY_BASE × 2^(attempt-1)`, capped at `RPC_RETRY_MAX`, moved by `jitter_permille`
/// (0 to 1000, drawn at random by the caller: [`jitter`]) into [ceiling/2, ceiling], so
/// clients that failed together do not retry together.
pub fn retry_delay(attempt: u32, jitter_permille: u32) -> Duration {
    let ceiling = RPC_RETRY_BASE
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
        .min(RPC_RETRY_MAX);
    ceiling / 2 + ceiling * jitter_permille.min(1000) / 2000
}

/// A random jitter for [`retry_delay`], 0 to 1000.
pub fn jitter() -> u32 {
    rand::random_range(0..=1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_with_jitter_and_a_ceiling() {
        assert_eq!(retry_delay(1, 0), Duration::from_millis(50));
        assert_eq!(retry_delay(1, 1000), Duration::from_millis(100));
        assert_eq!(retry_delay(2, 0), Duration::from_millis(100));
        assert_eq!(retry_delay(3, 500), Duration::from_millis(300));
        // The ceiling holds for any attempt, however large, and any jitter.
        assert_eq!(retry_delay(30, 0), RPC_RETRY_MAX / 2);
        assert_eq!(retry_delay(u32::MAX, u32::MAX), RPC_RETRY_MAX);
        // Two clients with different draws wait differently.
        assert_ne!(retry_delay(4, 100), retry_delay(4, 900));
        assert!((0..100).all(|_| jitter() <= 1000));
        let rpc = Rpc::new("http://127.0.0.1:9", "u", "p", Duration::from_secs(1)).unwrap();
        assert!(rpc.clone().with_attempts(0).is_err());
        assert!(rpc.clone().with_attempts(RPC_ATTEMPTS_MAX + 1).is_err());
        assert!(rpc.with_attempts(3).is_ok());
    }

    /// A read against a closed port is tried `attempts` times, then its error returned.
    #[tokio::test]
    async fn a_read_is_retried_a_bounded_number_of_times() {
        let rpc = Rpc::new("http://127.0.0.1:9", "u", "p", Duration::from_millis(200))
            .unwrap()
            .with_attempts(3)
            .unwrap();
        let started = std::time::Instant::now();
        let error = rpc.call("getblockcount", json!([])).await.unwrap_err();
        assert!(matches!(error, RpcError::Transport(_)));
        // Two pauses: at least 50 + 100 ms, at most 100 + 200 ms plus the refused connects.
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(150), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    /// A provider's key in the URL's path or query never shows: not in `Debug`, not in the
    /// shown URL, not in a transport error.
    #[tokio::test]
    async fn the_url_path_and_query_never_show() {
        let rpc = Rpc::new(
            "http://127.0.0.1:9/v2/path-secret?apikey=query-secret",
            "user",
            "password-secret",
            Duration::from_millis(500),
        )
        .unwrap();
        let error = rpc.call_once("getblockcount", json!([])).await.unwrap_err();
        let shown = format!("{rpc:?} {} {error:?} {error}", rpc.url());
        for secret in ["path-secret", "query-secret", "password-secret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("127.0.0.1:9"), "the host is shown: {shown}");
    }
}
