//! `/api/v1/deposit-addresses` and `/api/v1/deposits` through the router, on both stores: an
//! address derived from the chain's deposit xpub (the very key the signer would hold for
//! it), the same reference always answered with the same address, racing requests for one
//! reference ending with one address and for many references with distinct indexes, bad
//! input refused with nothing stored, paging, deposits listed with their reference and their
//! amount in the asset's unit, and the roles: the backend and admins issue, viewers read,
//! operators may not issue.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use chain::address::Network;
use chrono::Utc;
use domain::{Amount, Chain, Role};
use serde_json::{Value, json};
use signer::Signer;
use store::{DepositInsert, ScannedBlock, Store};
use testkit::TestDb;
use tower::ServiceExt;

const MNEMONIC: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

#[derive(Debug)]
struct Derive(signer::Xpub);

impl web::deposits::DeriveAddress for Derive {
    fn derive(&self, index: u32) -> Result<chain::address::Address, String> {
        self.0.address(index).map_err(|error| error.to_string())
    }
}

fn signer() -> signer::InProcessSigner {
    signer::InProcessSigner::new(
        &signer::Mnemonic::parse(MNEMONIC).unwrap(),
        Network::Mainnet,
    )
}

/// Derivers for `chains`, from the exported deposit xpubs (as the configuration holds them).
fn intake(chains: &[Chain]) -> web::deposits::DepositIntake {
    let signer = signer();
    web::deposits::DepositIntake {
        derivers: chains
            .iter()
            .map(|chain| {
                let text = signer.deposit_xpub(*chain).unwrap().to_string();
                let xpub = signer::Xpub::parse_deposit(*chain, Network::Mainnet, &text).unwrap();
                let derive: Arc<dyn web::deposits::DeriveAddress> = Arc::new(Derive(xpub));
                (*chain, derive)
            })
            .collect(),
        ..Default::default()
    }
}

struct Api {
    store: Store,
    router: axum::Router,
}

impl Api {
    async fn new(db: &TestDb, chains: &[Chain]) -> Api {
        let store = db.store().await;
        let options = web::WebOptions {
            deposits: Arc::new(intake(chains)),
            auth_failures_per_minute: u32::MAX,
            ..Default::default()
        };
        let router = web::router(
            store.clone(),
            Arc::new(queue::SqlBackend::new(store.clone())),
            &options,
        );
        Api { store, router }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"));
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let response = self
            .router
            .clone()
            .oneshot(
                request
                    .body(body.map_or_else(Body::empty, |body| Body::from(body.to_string())))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn issue(&self, token: &str, chain: &str, reference: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/api/v1/deposit-addresses",
            token,
            Some(json!({"chain": chain, "reference": reference})),
        )
        .await
    }

    async fn issued(&self) -> Vec<store::DepositAddressRow> {
        self.store
            .deposit_address_list(&store::DepositAddressList {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
    }
}

async fn token(store: &Store, role: Role, name: &str) -> String {
    web::auth::issue(store, name, role, Utc::now())
        .await
        .unwrap()
        .1
}

async fn one_address_per_reference_from_the_deposit_xpub(db: &TestDb) {
    let api = Api::new(db, &[Chain::Tron, Chain::Ethereum, Chain::Bitcoin]).await;
    let backend = token(&api.store, Role::Service, "backend").await;
    let signer = signer();
    let (status, first) = api.issue(&backend, "ethereum", "user:7").await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["index"], 0);
    // The address of key 0 of the deposit account, as the signer derives it from the seed:
    // never the hot wallet's (account 0, key 0).
    let deposit_key = signer
        .deposit_xpub(Chain::Ethereum)
        .unwrap()
        .address(0)
        .unwrap();
    assert_eq!(first["address"], deposit_key.as_str());
    assert_ne!(
        first["address"],
        signer.address(Chain::Ethereum, 0).unwrap().as_str()
    );
    let (status, again) = api.issue(&backend, "ethereum", "user:7").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, first);
    let (status, other) = api.issue(&backend, "ethereum", "user:8").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(other["index"], 1);
    // Another chain counts its own indexes; a Bitcoin address is bech32 P2WPKH.
    let (status, btc) = api.issue(&backend, "bitcoin", "user:7").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(btc["index"], 0);
    assert!(
        btc["address"].as_str().unwrap().starts_with("bc1q"),
        "{btc}"
    );
    let (_, tron) = api.issue(&backend, "tron", "user:7").await;
    assert!(tron["address"].as_str().unwrap().starts_with('T'), "{tron}");

    // Racing requests: one reference gets one address; many get distinct indexes.
    let same = (0..12).map(|_| api.issue(&backend, "tron", "user:race"));
    let answers = futures_util::future::join_all(same).await;
    let addresses: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(status, body)| {
            assert!(status.is_success(), "{body}");
            body["address"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(addresses.len(), 1);
    assert_eq!(
        answers
            .iter()
            .filter(|(status, _)| *status == StatusCode::CREATED)
            .count(),
        1
    );
    let many = (0..12).map(|n| {
        let backend = backend.clone();
        let api = &api;
        async move { api.issue(&backend, "tron", &format!("user:many:{n}")).await }
    });
    let answers = futures_util::future::join_all(many).await;
    let indexes: std::collections::BTreeSet<i64> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, StatusCode::CREATED, "{body}");
            body["index"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(indexes.len(), 12);
    let tron_rows: Vec<_> = api
        .issued()
        .await
        .into_iter()
        .filter(|row| row.chain == Chain::Tron)
        .collect();
    assert_eq!(tron_rows.len(), 14);
    for row in &tron_rows {
        let expected = signer
            .deposit_xpub(Chain::Tron)
            .unwrap()
            .address(row.index)
            .unwrap();
        assert_eq!(row.address, expected.as_str(), "index {}", row.index);
    }
    // Each issue is audited once, with the backend as actor.
    let audit = api
        .store
        .audit_list(&store::AuditList {
            action: Some("deposit_address.create".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), api.issued().await.len());
    assert!(audit[0].actor.ends_with(":backend"), "{}", audit[0].actor);

    // Paging, oldest first.
    let viewer = token(&api.store, Role::Viewer, "viewer").await;
    let (status, page) = api
        .call(
            Method::GET,
            "/api/v1/deposit-addresses?chain=ethereum&limit=1",
            &viewer,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["deposit_addresses"][0]["reference"], "user:7");
    let after = page["next_after"].as_i64().unwrap();
    let (_, next) = api
        .call(
            Method::GET,
            &format!("/api/v1/deposit-addresses?chain=ethereum&limit=1&after={after}"),
            &viewer,
            None,
        )
        .await;
    assert_eq!(next["deposit_addresses"][0]["reference"], "user:8");
    let (_, by_reference) = api
        .call(
            Method::GET,
            "/api/v1/deposit-addresses?reference=user:7",
            &viewer,
            None,
        )
        .await;
    assert_eq!(
        by_reference["deposit_addresses"].as_array().unwrap().len(),
        3
    );
}

async fn bad_requests_and_roles_change_nothing(db: &TestDb) {
    let api = Api::new(db, &[Chain::Tron]).await;
    let backend = token(&api.store, Role::Service, "backend").await;
    let operator = token(&api.store, Role::Operator, "operator").await;
    let viewer = token(&api.store, Role::Viewer, "viewer").await;
    for (chain, reference, code, field) in [
        ("solana", "user:1", "invalid", "chain"),
        ("tron", "", "invalid", "reference"),
        ("tron", &"r".repeat(201), "invalid", "reference"),
        ("tron", "a\u{1}b", "invalid", "reference"),
        (
            "ethereum",
            "user:1",
            "unconfigured",
            "ethereum_deposit_xpub",
        ),
    ] {
        let (status, body) = api.issue(&backend, chain, reference).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(field),
            "{body}"
        );
    }
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/deposit-addresses",
            &backend,
            Some(json!({"chain": "tron", "reference": "u", "extra": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // Operators and viewers may not issue; viewers may read.
    for token in [&operator, &viewer] {
        let (status, _) = api.issue(token, "tron", "user:1").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    assert!(api.issued().await.is_empty());
    for query in [
        "?chain=solana",
        "?state=lost",
        "?limit=x",
        "?nope=1",
        "?reference=a%00b",
    ] {
        let (status, body) = api
            .call(
                Method::GET,
                &format!("/api/v1/deposits{query}"),
                &viewer,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
    }
}

async fn deposits_listed_with_their_reference(db: &TestDb) {
    let api = Api::new(db, &[Chain::Tron]).await;
    let backend = token(&api.store, Role::Service, "backend").await;
    let (_, issued) = api.issue(&backend, "tron", "user:42").await;
    let address = issued["address"].as_str().unwrap().to_string();
    let block = ScannedBlock {
        number: 100,
        hash: "00aa".into(),
        parent_hash: "0099".into(),
    };
    let usdt = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t";
    let deposit = |txid: &str, asset: &str, amount: u128, ignored: Option<&str>| DepositInsert {
        txid: txid.into(),
        asset: asset.into(),
        position: 0,
        address: address.clone(),
        sender: Some("TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7".into()),
        amount: Amount::from_u128(amount),
        block_number: 100,
        block_hash: "00aa".into(),
        ignored: ignored.map(str::to_string),
    };
    api.store
        .scan_commit(
            Chain::Tron,
            &[block],
            &[
                deposit("t1", usdt, 12_500_000, None),
                deposit("t2", "native", 0, Some("zero value")),
            ],
            Utc::now(),
        )
        .await
        .unwrap();
    api.store
        .deposits_credit(Chain::Tron, 100, Utc::now())
        .await
        .unwrap();
    let (status, page) = api
        .call(
            Method::GET,
            "/api/v1/deposits?reference=user:42&state=credited",
            &backend,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let deposits = page["deposits"].as_array().unwrap();
    assert_eq!(deposits.len(), 1);
    let credited = &deposits[0];
    assert_eq!(credited["asset"], "USDT");
    assert_eq!(credited["contract"], usdt);
    assert_eq!(credited["amount"], "12.5");
    assert_eq!(credited["amount_base_units"], "12500000");
    assert_eq!(credited["reference"], "user:42");
    assert_eq!(credited["address"], address.as_str());
    assert_eq!(credited["state"], "credited");
    let (_, ignored) = api
        .call(
            Method::GET,
            "/api/v1/deposits?state=ignored",
            &backend,
            None,
        )
        .await;
    assert_eq!(ignored["deposits"][0]["asset"], "TRX");
    assert_eq!(ignored["deposits"][0]["reason"], "zero value");
    let (_, none) = api
        .call(
            Method::GET,
            "/api/v1/deposits?reference=user:43",
            &backend,
            None,
        )
        .await;
    assert!(none["deposits"].as_array().unwrap().is_empty());
}

/// `GET /api/admin/sweeps`: for operators (viewer and above; the backend's service token is
/// refused: sweeps are internal money movement), newest first, filtered by chain and state,
/// paged; amounts in the asset's unit and base units, the cost in the native coin's; bad
/// filters refused.
async fn sweeps_listed_for_operators(db: &TestDb) {
    let api = Api::new(db, &[]).await;
    let backend = token(&api.store, Role::Service, "backend").await;
    let viewer = token(&api.store, Role::Viewer, "wallboard").await;
    let (status, page) = api
        .call(Method::GET, "/api/admin/sweeps", &viewer, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page, json!({"sweeps": [], "next_before_id": null}));
    let usdt = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t";
    let mut ids = Vec::new();
    for (n, asset) in [usdt, "native", usdt].into_iter().enumerate() {
        let inserted = api
            .store
            .sweep_insert(&store::SweepInsert {
                chain: Chain::Tron,
                kind: store::SweepKind::Sweep,
                address: format!("TAddress{n}"),
                address_index: n as u32,
                asset: asset.into(),
                amount: Amount::from_u128(12_500_000),
                destination: "THot".into(),
                price_per_gas: 100,
                gas_limit: 65_000,
                top_up: (n == 0).then(|| ("TGas".to_string(), Amount::from_u128(14_000_000))),
                energy: None,
                now: Utc::now(),
            })
            .await
            .unwrap();
        let store::SweepInserted::Created(row) = inserted else {
            panic!("{inserted:?}")
        };
        ids.push(row.id);
    }
    // The first one's top-up is mined and it is swept, with both fees.
    let mut moved = store::SweepAdvance::new(
        ids[0],
        store::SweepState::ToppingUp,
        store::SweepState::Sweeping,
        Utc::now(),
    );
    moved.top_up_txid = Some("aa".into());
    moved.top_up_fee = Some(Amount::from_u128(1_100_000));
    api.store.sweep_advance(&moved).await.unwrap();
    let mut swept = store::SweepAdvance::new(
        ids[0],
        store::SweepState::Sweeping,
        store::SweepState::Swept,
        Utc::now(),
    );
    swept.sweep_txid = Some("bb".into());
    swept.sweep_fee = Some(Amount::from_u128(13_000_000));
    api.store.sweep_advance(&swept).await.unwrap();

    let (status, page) = api
        .call(
            Method::GET,
            "/api/admin/sweeps?chain=tron&limit=2",
            &viewer,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let shown: Vec<i64> = page["sweeps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["id"].as_i64().unwrap())
        .collect();
    assert_eq!(shown, vec![ids[2], ids[1]]);
    assert_eq!(page["next_before_id"], ids[1]);
    assert!(page["sweeps"][0]["open_seconds"].as_i64().unwrap() >= 0);
    let (_, rest) = api
        .call(
            Method::GET,
            &format!("/api/admin/sweeps?before_id={}", ids[1]),
            &viewer,
            None,
        )
        .await;
    let first = &rest["sweeps"][0];
    assert_eq!(first["id"], ids[0]);
    assert_eq!(first["state"], "swept");
    assert_eq!(first["asset"], "USDT");
    assert_eq!(first["contract"], usdt);
    assert_eq!(first["amount"], "12.5");
    assert_eq!(first["amount_base_units"], "12500000");
    assert_eq!(first["path"], "token with a top-up");
    assert_eq!(first["cost"], "14100000");
    assert_eq!(first["top_up_txid"], "aa");
    assert_eq!(first["sweep_txid"], "bb");
    assert_eq!(first["open_seconds"], Value::Null);
    assert_eq!(rest["next_before_id"], Value::Null);
    let (_, swept_only) = api
        .call(Method::GET, "/api/admin/sweeps?state=swept", &viewer, None)
        .await;
    assert_eq!(swept_only["sweeps"].as_array().unwrap().len(), 1);
    let (_, none) = api
        .call(
            Method::GET,
            "/api/admin/sweeps?chain=ethereum",
            &viewer,
            None,
        )
        .await;
    assert!(none["sweeps"].as_array().unwrap().is_empty());
    for bad in [
        "/api/admin/sweeps?state=lost",
        "/api/admin/sweeps?chain=doge",
        "/api/admin/sweeps?colour=red",
        "/api/admin/sweeps?before_id=x",
    ] {
        let (status, answer) = api.call(Method::GET, bad, &viewer, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid", "{bad}: {answer}");
    }
    let (status, _) = api
        .call(Method::GET, "/api/admin/sweeps", &backend, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

testkit::on_both_stores!(
    db: one_address_per_reference_from_the_deposit_xpub,
    bad_requests_and_roles_change_nothing,
    deposits_listed_with_their_reference,
    sweeps_listed_for_operators
);
