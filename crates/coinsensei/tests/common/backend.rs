//! The exchange's backend as the withdrawal tests play it: a keystore for the workers, a
//! `service` token, and `/api/v1/withdrawals` over HTTP.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Up, stderr};

/// The password of the tests' keystores.
const PASSWORD: &str = "correct horse battery staple";

/// A keystore holding `mnemonic` in `dir`, and the file with its password, as the
/// configuration's `keystore` and `keystore_password_file` lines.
pub fn keystore_lines(dir: &Path, mnemonic: &str) -> String {
    let keystore: PathBuf = dir.join("keystore.json");
    let password = dir.join("password");
    std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
    signer::keystore::create(
        &keystore,
        &signer::Mnemonic::parse(mnemonic).unwrap(),
        PASSWORD.as_bytes(),
        signer::keystore::KdfParams::default(),
    )
    .unwrap();
    format!(
        "keystore = \"{}\"\nkeystore_password_file = \"{}\"\n",
        keystore.display(),
        password.display()
    )
}

/// The backend's client of a running `up`, with a fresh `service` token.
pub struct Backend {
    pub client: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Backend {
    pub async fn new(database_url: &str, up: &Up) -> Backend {
        let token = super::token(database_url, "service", "backend").await;
        let _ = rustls::crypto::ring::default_provider().install_default();
        Backend {
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(15))
                .build()
                .unwrap(),
            base: format!("http://{}", up.address),
            token,
        }
    }

    /// POST /api/v1/deposit-addresses: the address issued for `reference` on `chain`, which
    /// must be new (201).
    pub async fn issue_address(&self, chain: &str, reference: &str) -> String {
        let response = self
            .client
            .post(format!("{}/api/v1/deposit-addresses", self.base))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({"chain": chain, "reference": reference}))
            .send()
            .await
            .expect("POST /api/v1/deposit-addresses");
        assert_eq!(response.status().as_u16(), 201);
        let body: Value = response.json().await.unwrap();
        body["address"].as_str().unwrap().to_string()
    }

    /// POST /api/v1/withdrawals with `key`: the status and the body.
    pub async fn create(&self, key: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}/api/v1/withdrawals", self.base))
            .bearer_auth(&self.token)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .expect("POST /api/v1/withdrawals");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Every withdrawal matching `query` (`&state=…`), all pages.
    pub async fn list(&self, query: &str) -> Vec<Value> {
        let mut rows = Vec::new();
        let mut before = String::new();
        loop {
            let response = self
                .client
                .get(format!(
                    "{}/api/v1/withdrawals?limit=1000{query}{before}",
                    self.base
                ))
                .bearer_auth(&self.token)
                .send()
                .await
                .expect("GET /api/v1/withdrawals");
            let page: Value = response.json().await.unwrap();
            rows.extend(page["withdrawals"].as_array().cloned().unwrap_or_default());
            match page["next_before_id"].as_i64() {
                Some(next) => before = format!("&before_id={next}"),
                None => return rows,
            }
        }
    }
}

/// The Ethereum deposit account's xpub of the keystore `keystore_lines` wrote in `dir`,
/// exported by the CLI (`keys xpub --deposit`), as an operator does: the rest of the system
/// never sees the keystore.
pub async fn deposit_xpub(dir: &Path) -> String {
    let exported = super::coinsensei([
        "keys",
        "xpub",
        "--chain",
        "ethereum",
        "--deposit",
        "--keystore",
        dir.join("keystore.json").to_str().unwrap(),
    ])
    .env("COINSENSEI_KEYSTORE_PASSWORD_FILE", dir.join("password"))
    .output()
    .await
    .unwrap();
    assert!(exported.status.success(), "{}", stderr(&exported));
    let xpub = String::from_utf8_lossy(&exported.stdout).trim().to_string();
    assert!(xpub.starts_with("xpub"), "{xpub}");
    xpub
}
