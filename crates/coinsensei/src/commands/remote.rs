//! The operator commands against a remote control plane: `--server URL` with the token from
//! `COINSENSEI_TOKEN`. They call the admin API and print what the local commands print (the
//! API's JSON is the same `web::dto` shapes the local commands render).

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

/// The environment variable holding the API token for `--server`.
pub const TOKEN_ENV: &str = "COINSENSEI_TOKEN";

/// A control plane reached over HTTP(S).
pub struct Remote {
    base: Url,
    token: String,
    client: reqwest::Client,
}

/// An answer of the admin API other than success, as the server worded it.
#[derive(Debug, thiserror::Error)]
#[error("the control plane refused: {message} ({status}, {code})")]
pub struct Refused {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl Remote {
    /// The control plane at `server` (`http://HOST:PORT` or `https://...`), with the token
    /// from the environment.
    pub fn new(server: &str) -> anyhow::Result<Remote> {
        let mut base = Url::parse(server).with_context(|| {
            format!("--server {server:?} is not a URL like http://127.0.0.1:8080")
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
            bail!("--server {server:?} is not an http:// or https:// URL");
        }
        if !base.username().is_empty() || base.password().is_some() {
            bail!("--server must not carry credentials; the token comes from {TOKEN_ENV}");
        }
        let loopback = match base.host() {
            Some(url::Host::Ipv4(address)) => address.is_loopback(),
            Some(url::Host::Ipv6(address)) => address.is_loopback(),
            Some(url::Host::Domain(name)) => name == "localhost",
            None => false,
        };
        if base.scheme() == "http" && !loopback {
            eprintln!(
                "warning: {server} is plain http: the token crosses the network unencrypted (put the control plane behind TLS and use https://)"
            );
        }
        base.set_query(None);
        base.set_fragment(None);
        let token = std::env::var(TOKEN_ENV)
            .ok()
            .map(|token| token.trim().to_string())
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                anyhow!(
                    "--server needs an API token in {TOKEN_ENV} (on the server: `coinsensei tokens create --role operator --name NAME`)"
                )
            })?;
        // reqwest is built without a default crypto provider; ring is ours. A second call
        // finds it installed, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("coinsensei-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Remote {
            base,
            token,
            client,
        })
    }

    /// The URL of `segments` under the server's base path, each segment escaped.
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> anyhow::Result<Url> {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| anyhow!("--server cannot be a base for paths"))?;
            path.pop_if_empty();
            path.extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(key, value)| (*key, value.as_str())));
        }
        Ok(url)
    }

    pub async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> anyhow::Result<Value> {
        Ok(self.send(Method::GET, segments, query, None, None).await?.1)
    }

    pub async fn post(&self, segments: &[&str], body: Option<&Value>) -> anyhow::Result<Value> {
        Ok(self.send(Method::POST, segments, &[], body, None).await?.1)
    }

    /// A POST answering the status too (201 created, 200 found).
    pub async fn post_answered(
        &self,
        segments: &[&str],
        body: &Value,
    ) -> anyhow::Result<(StatusCode, Value)> {
        self.send(Method::POST, segments, &[], Some(body), None)
            .await
    }

    /// A POST with an `Idempotency-Key`, answering the status too (201 created, 200 found).
    pub async fn post_keyed(
        &self,
        segments: &[&str],
        body: &Value,
        idempotency_key: &str,
    ) -> anyhow::Result<(StatusCode, Value)> {
        self.send(
            Method::POST,
            segments,
            &[],
            Some(body),
            Some(idempotency_key),
        )
        .await
    }

    async fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let url = self.url(segments, query)?;
        let mut request = self
            .client
            .request(method, url.clone())
            .bearer_auth(&self.token);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|error| anyhow!("cannot reach the control plane at {}: {error}", self.base))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("reading the answer of {url}"))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            if value.is_null() {
                bail!("the control plane at {} did not answer JSON", self.base);
            }
            return Ok((status, value));
        }
        let message = value["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| {
                format!(
                    "{} from {url}",
                    status.canonical_reason().unwrap_or("error")
                )
            });
        Err(Refused {
            status,
            code: value["error"]["code"]
                .as_str()
                .unwrap_or("unknown")
                .to_string(),
            message,
        }
        .into())
    }
}

/// Refuses a command that has no admin API route, saying where it can run.
pub fn local_only(command: &str) -> anyhow::Error {
    anyhow!(
        "`{command}` works on the database directly and has no --server form; run it where the configuration reaches the database"
    )
}
