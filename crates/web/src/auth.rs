//! API tokens: 256 random bits shown once as `cst_` and 64 hex digits, stored only as their
//! SHA-256. A fast hash is enough: nobody can guess 256 random bits, slowly or quickly.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Characters of a token kept (in clear) to recognise it in lists and logs.
pub const TOKEN_PREFIX_LEN: usize = 8;

/// A token freshly made: the secret to show once, and what the store keeps.
pub struct NewToken {
    pub secret: String,
    pub hash: String,
    pub prefix: String,
}

impl std::fmt::Debug for NewToken {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

pub fn new_token() -> NewToken {
    let bytes: [u8; 32] = rand::random();
    let secret = format!("cst_{}", hex(&bytes));
    NewToken {
        hash: hash_token(&secret),
        prefix: secret[..TOKEN_PREFIX_LEN].to_string(),
        secret,
    }
}

/// Whether `text` looks like one of our tokens: `cst_` and 64 lowercase hex digits.
pub fn is_token_shaped(text: &str) -> bool {
    text.len() == 68
        && text.starts_with("cst_")
        && text[4..]
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

/// Makes a token named `name` with `role` and stores its hash: the stored row, and the
/// secret to show once. The one way tokens are made (CLI, API, tests).
pub async fn issue(
    store: &store::Store,
    name: &str,
    role: domain::Role,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(store::ApiTokenRow, String), store::StoreError> {
    let token = new_token();
    let row = store
        .api_token_insert(&store::ApiTokenInsert {
            name: name.to_string(),
            role,
            token_hash: token.hash.clone(),
            prefix: token.prefix.clone(),
            now,
        })
        .await?;
    Ok((row, token.secret))
}

/// The stored form of a token.
pub fn hash_token(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// How long a client's failed authentications are counted together.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Client addresses remembered at most; beyond it, finished windows are forgotten first.
const FAILURE_CLIENTS_MAX: usize = 10_000;

/// Counts failed authentications per client address in one-minute windows; a client over the
/// limit is refused (429) before its token is even looked up, until its window ends. Hand-
/// written because rate-limit crates (governor) cannot look without spending: we charge only
/// failures, but must refuse before authenticating.
#[derive(Debug)]
pub struct FailureLimiter {
    per_window: u32,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailureLimiter {
    pub fn new(per_minute: u32) -> Self {
        FailureLimiter {
            per_window: per_minute.max(1),
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn key(client: Option<IpAddr>) -> IpAddr {
        match client {
            // An IPv6 host usually holds a whole /64: count it as one client.
            Some(IpAddr::V6(address)) => {
                let bits = u128::from(address) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
            Some(address) => address,
            // Without a peer address (in-process callers) every caller shares one window.
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }

    /// How long until `client` may try again, when it has used up its failures.
    pub fn blocked(&self, client: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let (started, failures) = windows.get(&Self::key(client))?;
        let elapsed = now.saturating_duration_since(*started);
        (elapsed < FAILURE_WINDOW && *failures >= self.per_window)
            .then(|| FAILURE_WINDOW.saturating_sub(elapsed))
    }

    /// Counts one failed authentication by `client`.
    pub fn record_failure(&self, client: Option<IpAddr>, now: Instant) {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let mut key = Self::key(client);
        if windows.len() >= FAILURE_CLIENTS_MAX && !windows.contains_key(&key) {
            windows
                .retain(|_, (started, _)| now.saturating_duration_since(*started) < FAILURE_WINDOW);
            // Still full: too many clients failing at once; newcomers share one window.
            if windows.len() >= FAILURE_CLIENTS_MAX {
                key = IpAddr::V4(Ipv4Addr::BROADCAST);
            }
        }
        let window = windows.entry(key).or_insert((now, 0));
        if now.saturating_duration_since(window.0) >= FAILURE_WINDOW {
            *window = (now, 0);
        }
        window.1 = window.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_only_their_hash_is_kept() {
        let first = new_token();
        let second = new_token();
        assert_ne!(first.secret, second.secret);
        assert_eq!(first.secret.len(), 4 + 64);
        assert_eq!(first.hash, hash_token(&first.secret));
        assert_eq!(first.hash.len(), 64);
        assert!(first.secret.starts_with(&first.prefix));
        assert!(
            !format!("{first:?}").contains(&first.secret[10..]),
            "Debug never shows the secret"
        );
        // A published SHA-256 vector: the hash is the standard one.
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn failures_are_limited_per_client_and_window() {
        let limiter = FailureLimiter::new(3);
        let start = Instant::now();
        let client: Option<IpAddr> = Some("10.0.0.1".parse().unwrap());
        let other: Option<IpAddr> = Some("10.0.0.2".parse().unwrap());
        for _ in 0..3 {
            assert_eq!(limiter.blocked(client, start), None);
            limiter.record_failure(client, start);
        }
        let wait = limiter
            .blocked(client, start + Duration::from_secs(10))
            .unwrap();
        assert_eq!(wait, Duration::from_secs(50));
        assert_eq!(
            limiter.blocked(other, start),
            None,
            "other clients are not affected"
        );
        // The window ends: the client may try again, and its count starts over.
        let later = start + FAILURE_WINDOW;
        assert_eq!(limiter.blocked(client, later), None);
        limiter.record_failure(client, later);
        assert_eq!(limiter.blocked(client, later), None);
    }
}
