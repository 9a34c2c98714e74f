//! A fake java-tron full node (no TRON node can run here). It answers with the real response
//! shapes recorded in `crates/chain-tron/fixtures/recorded` (loaded and adapted: numbers, ids
//! and balances changed, keys and layout kept), keeps a small ledger, checks the signature of
//! every broadcast transaction against the account it spends from, and answers with the
//! node's own error codes in the node's order (TaPoS, expiration, then duplicate: java-tron's
//! `Manager.processTransaction` runs `validateTapos`, `validateCommon`, `validateDup`).
//!
//! Blocks carry their transactions (in the shapes of the recorded mainnet block), the
//! solidity endpoints (`/walletsolidity/*`) serve the chain up to the solidified head only,
//! and the solidity node's transaction index can be made to lag (`unindexed`), answering
//! `{}` for transactions its blocks hold.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use chain::address::{Address, Network};
use chain::provider::Asset;
use chain_tron::transaction::{self, RefBlock};
use chain_tron::{Config, Tron};
use domain::Chain;
use serde_json::{Value, json};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/recorded");
pub const USDT: &str = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t";
pub const RECIPIENT: &str = "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7";
pub const SOLIDIFIED_LAG: u64 = 19;

/// Block 0's time: the fake chain's head (block 100 at the start) is now, as the
/// transactions' timestamps come from the clock.
pub fn genesis_ms() -> i64 {
    static GENESIS: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *GENESIS.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        i64::try_from(now.as_millis()).unwrap() - 300_000
    })
}

pub fn fixture(name: &str) -> Value {
    let path = format!("{FIXTURES}/{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{path}: {error}"))
}

pub fn addr(text: &str) -> Address {
    Address::parse(Chain::Tron, Network::Mainnet, text).unwrap()
}

pub fn hex21(address: &Address) -> String {
    hex::encode(address.tron_bytes().unwrap())
}

pub fn block_id(number: u64) -> String {
    let mut id = [0x5au8; 32];
    id[..8].copy_from_slice(&number.to_be_bytes());
    hex::encode(id)
}

pub fn block_time(number: u64) -> i64 {
    genesis_ms() + i64::try_from(number).unwrap() * 3_000
}

#[derive(Default)]
pub struct Ledger {
    pub head: u64,
    /// TRX balances by 21-byte hex address.
    pub trx: HashMap<String, u64>,
    pub usdt: HashMap<String, u128>,
    /// Broadcast, not yet in a block.
    pub pool: Vec<(String, transaction::Decoded)>,
    /// Included transactions: txid → block number.
    pub included: HashMap<String, u64>,
    /// The transactions of each block, in order.
    pub blocks: HashMap<u64, Vec<(String, transaction::Decoded)>>,
    /// Token transfers by block, for gettransactioninfobyblocknum.
    pub infos: HashMap<u64, Vec<Value>>,
    /// The solidity node's transaction index lags: `walletsolidity/gettransactioninfobyid`
    /// answers `{}` whatever its blocks hold.
    pub unindexed: bool,
    /// TRC-20 transfers mined from now on run out of energy: in their block with
    /// `contractRet: OUT_OF_ENERGY`, no balance moved, no log.
    pub fail_tokens: bool,
    /// The transactions that failed so.
    pub failed: std::collections::HashSet<String>,
    /// Broadcasts never reach the node (it answers 503): the process that sent them might as
    /// well have crashed before sending.
    pub broadcasts_down: bool,
    /// A block the solidity node leaves out of its `getblockbylimitnext` pages.
    pub hidden: Option<u64>,
    /// How many times each path was asked.
    pub calls: HashMap<String, u64>,
    /// Broadcasts the node took (not duplicates).
    pub accepted: u64,
}

/// A transaction entry of a block, in the recorded mainnet block's shape (its signature is
/// the template's: the fake checks signatures at broadcast, not here).
fn block_transaction(txid: &str, decoded: &transaction::Decoded, failed: bool) -> Value {
    let template = fixture("wallet_getblockbynum.mainnet_transfer_and_usdt_abridged.json");
    let parsed = &decoded.parsed;
    let mut entry = match &parsed.asset {
        Asset::Native => {
            let mut entry = template["transactions"][0].clone();
            let value = &mut entry["raw_data"]["contract"][0]["parameter"]["value"];
            value["amount"] = json!(u64::try_from(parsed.amount.base_units()).unwrap());
            value["owner_address"] = json!(hex21(&parsed.from));
            value["to_address"] = json!(hex21(&parsed.to));
            entry
        }
        Asset::Token(token) => {
            let mut entry = template["transactions"][1].clone();
            let value = &mut entry["raw_data"]["contract"][0]["parameter"]["value"];
            value["owner_address"] = json!(hex21(&parsed.from));
            value["contract_address"] = json!(hex21(token));
            value["data"] = json!(format!(
                "a9059cbb{:0>64}{:064x}",
                &hex21(&parsed.to)[2..],
                parsed.amount.base_units()
            ));
            entry["raw_data"]["fee_limit"] = json!(decoded.fee_limit);
            entry
        }
    };
    entry["txID"] = json!(txid);
    if failed {
        entry["ret"][0]["contractRet"] = json!("OUT_OF_ENERGY");
    }
    let raw = &mut entry["raw_data"];
    raw["ref_block_bytes"] = json!(hex::encode(decoded.ref_block_bytes));
    raw["ref_block_hash"] = json!(hex::encode(decoded.ref_block_hash));
    raw["expiration"] = json!(decoded.expiration);
    raw["timestamp"] = json!(decoded.timestamp);
    entry["raw_data_hex"] = json!(hex::encode(&decoded.raw_data));
    entry
}

impl Ledger {
    /// A ledger at block 100 where `owner` holds 50 TRX and 10 USDT.
    pub fn funded(owner: &Address) -> Ledger {
        let mut ledger = Ledger {
            head: 100,
            ..Ledger::default()
        };
        ledger.trx.insert(hex21(owner), 50_000_000);
        ledger.usdt.insert(hex21(owner), 10_000_000);
        ledger
    }

    /// Block `number` in the node's shape (the Nile header fixture with its numbers
    /// replaced), with its transactions; a block without any has no `transactions` key.
    pub fn block(&self, number: u64) -> Value {
        let mut block = fixture("wallet_getnowblock.nile_header_transactions_elided.json");
        block["blockID"] = json!(block_id(number));
        let raw = &mut block["block_header"]["raw_data"];
        raw["number"] = json!(number);
        raw["parentHash"] = json!(block_id(number.saturating_sub(1)));
        raw["timestamp"] = json!(block_time(number));
        if let Some(transactions) = self.blocks.get(&number).filter(|list| !list.is_empty()) {
            block["transactions"] = json!(
                transactions
                    .iter()
                    .map(|(txid, decoded)| {
                        block_transaction(txid, decoded, self.failed.contains(txid))
                    })
                    .collect::<Vec<_>>()
            );
        }
        block
    }

    /// Puts the pool into a new head block; a transaction whose expiration is not after the
    /// parent's time is dropped, as java-tron's `validateCommon` does.
    pub fn mine(&mut self) {
        let parent_time = block_time(self.head);
        self.head += 1;
        let mut in_block = Vec::new();
        for (txid, decoded) in std::mem::take(&mut self.pool) {
            if decoded.expiration <= parent_time {
                continue;
            }
            self.included.insert(txid.clone(), self.head);
            let from = hex21(&decoded.parsed.from);
            let to = hex21(&decoded.parsed.to);
            let amount = u128::try_from(decoded.parsed.amount.base_units()).unwrap();
            match &decoded.parsed.asset {
                Asset::Native => {
                    *self.trx.get_mut(&from).unwrap() -= u64::try_from(amount).unwrap();
                    *self.trx.entry(to).or_default() += u64::try_from(amount).unwrap();
                }
                Asset::Token(_) if self.fail_tokens => {
                    let mut info =
                        fixture("wallet_gettransactioninfobyid.mainnet_usdt_out_of_energy.json");
                    info["id"] = json!(txid);
                    info["blockNumber"] = json!(self.head);
                    info["blockTimeStamp"] = json!(block_time(self.head));
                    self.infos.entry(self.head).or_default().push(info);
                    self.failed.insert(txid.clone());
                }
                Asset::Token(token) => {
                    *self.usdt.get_mut(&from).unwrap() -= amount;
                    *self.usdt.entry(to.clone()).or_default() += amount;
                    let mut info =
                        fixture("wallet_gettransactioninfobyid.mainnet_usdt_transfer_success.json");
                    info["id"] = json!(txid);
                    info["blockNumber"] = json!(self.head);
                    info["blockTimeStamp"] = json!(block_time(self.head));
                    info["contract_address"] = json!(hex21(token));
                    let log = &mut info["log"][0];
                    log["address"] = json!(&hex21(token)[2..]);
                    log["topics"][1] = json!(format!("{:0>64}", &from[2..]));
                    log["topics"][2] = json!(format!("{:0>64}", &to[2..]));
                    log["data"] = json!(format!("{amount:064x}"));
                    self.infos.entry(self.head).or_default().push(info);
                }
            }
            in_block.push((txid, decoded));
        }
        self.blocks.insert(self.head, in_block);
    }

    pub fn mine_n(&mut self, count: u64) {
        for _ in 0..count {
            self.mine();
        }
    }

    pub fn solidified(&self) -> u64 {
        self.head.saturating_sub(SOLIDIFIED_LAG)
    }

    fn info(&self, txid: &str, solid: bool) -> Value {
        if solid && self.unindexed {
            return json!({});
        }
        match self.included.get(txid) {
            Some(&number) if !solid || number <= self.solidified() => {
                let mut info = fixture(if self.failed.contains(txid) {
                    "wallet_gettransactioninfobyid.mainnet_usdt_out_of_energy.json"
                } else {
                    "wallet_gettransactioninfobyid.mainnet_trx_transfer.json"
                });
                info["id"] = json!(txid);
                info["blockNumber"] = json!(number);
                info["blockTimeStamp"] = json!(block_time(number));
                info
            }
            _ => json!({}),
        }
    }

    /// `getblockbylimitnext` over blocks up to `last`: java-tron's servlet answers `{}` for a
    /// range it refuses (empty, or more than 100).
    fn block_range(&self, body: &Value, last: u64) -> Value {
        let start = body["startNum"].as_u64().unwrap_or(0);
        let end = body["endNum"].as_u64().unwrap_or(0);
        if end == 0 || end <= start || end - start > 100 {
            return json!({});
        }
        let blocks: Vec<Value> = (start..end.min(last + 1))
            .filter(|number| Some(*number) != self.hidden)
            .map(|number| self.block(number))
            .collect();
        if blocks.is_empty() {
            return json!({});
        }
        let mut answer =
            fixture("wallet_getblockbylimitnext.nile_first_block_transactions_elided.json");
        answer["block"] = json!(blocks);
        answer
    }
}

pub type Shared = Arc<Mutex<Ledger>>;

fn dup(txid: &str) -> Value {
    // Derived from java-tron's Wallet.broadcastTransaction (no recorded body exists).
    json!({"code": "DUP_TRANSACTION_ERROR", "txid": txid, "message": hex::encode("Dup transaction.")})
}

fn broadcast(ledger: &mut Ledger, hex_bytes: &str) -> Value {
    let bytes = hex::decode(hex_bytes).unwrap();
    let decoded = match transaction::decode(&bytes) {
        Ok(decoded) => decoded,
        Err(_) => return fixture("wallet_broadcasttransaction.sigerror.json"),
    };
    let txid = decoded.txid.clone();
    let answer = |mut body: Value| {
        body["txid"] = json!(txid);
        body
    };
    // java-tron's order: TaPoS, then the expiration against the head, then duplicates. So
    // an expired transaction is refused as expired even when it is on chain already.
    let known = (0..=ledger.head).rev().take(65_536).any(|number| {
        let id = RefBlock::from_hex(&block_id(number)).unwrap();
        id.ref_block_bytes() == decoded.ref_block_bytes
            && id.ref_block_hash() == decoded.ref_block_hash
    });
    if !known {
        return answer(fixture("wallet_broadcasttransaction.tapos_error.json"));
    }
    if decoded.expiration <= block_time(ledger.head) {
        return answer(fixture(
            "wallet_broadcasttransaction.transaction_expiration_error.json",
        ));
    }
    if ledger.included.contains_key(&txid) || ledger.pool.iter().any(|(id, _)| *id == txid) {
        return dup(&txid);
    }
    let from = hex21(&decoded.parsed.from);
    let amount = u128::try_from(decoded.parsed.amount.base_units()).unwrap();
    let enough = match decoded.parsed.asset {
        Asset::Native => u128::from(ledger.trx.get(&from).copied().unwrap_or(0)) >= amount,
        Asset::Token(_) => ledger.usdt.get(&from).copied().unwrap_or(0) >= amount,
    };
    if !enough {
        return answer(fixture(
            "wallet_broadcasttransaction.contract_validate_error.json",
        ));
    }
    ledger.pool.push((txid.clone(), decoded));
    ledger.accepted += 1;
    answer(fixture(
        "wallet_broadcasttransaction.success_shasta_trx.json",
    ))
}

async fn handle(
    State(ledger): State<Shared>,
    path: axum::http::Uri,
    Json(body): Json<Value>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut ledger = ledger.lock().unwrap();
    *ledger.calls.entry(path.path().to_string()).or_default() += 1;
    if ledger.broadcasts_down && path.path() == "/wallet/broadcasthex" {
        return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let account_hex = |body: &Value| hex21(&addr(body["address"].as_str().unwrap()));
    let answer = match path.path() {
        "/wallet/getnowblock" => ledger.block(ledger.head),
        "/walletsolidity/getnowblock" => ledger.block(ledger.solidified()),
        "/wallet/getblockbynum" | "/walletsolidity/getblockbynum" => {
            let last = if path.path().starts_with("/walletsolidity") {
                ledger.solidified()
            } else {
                ledger.head
            };
            let number = body["num"].as_u64().unwrap();
            if number <= last {
                ledger.block(number)
            } else {
                json!({})
            }
        }
        "/wallet/getblockbylimitnext" => ledger.block_range(&body, ledger.head),
        "/walletsolidity/getblockbylimitnext" => ledger.block_range(&body, ledger.solidified()),
        "/wallet/getaccount" => {
            let address = account_hex(&body);
            match ledger.trx.get(&address) {
                None => fixture("wallet_getaccount.unactivated_empty.json"),
                Some(&balance) => {
                    let mut account = fixture("wallet_getaccount.local_node_visible_true.json");
                    account["address"] = body["address"].clone();
                    account["balance"] = json!(balance);
                    account
                }
            }
        }
        "/wallet/getaccountresource" => fixture("wallet_getaccountresource.nile.json"),
        "/wallet/getchainparameters" => {
            let mut parameters = fixture("wallet_getchainparameters.nile_first8_truncated.json");
            // The truncated Nile list lacks the energy price and the account-creation
            // bandwidth rate: taken from the mainnet list.
            let mainnet =
                fixture("wallet_getchainparameters.mainnet_2022_chainParameter_array_only.json");
            for key in ["getEnergyFee", "getCreateNewAccountBandwidthRate"] {
                let entry = mainnet
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|entry| entry["key"] == key)
                    .cloned()
                    .unwrap();
                parameters["chainParameter"]
                    .as_array_mut()
                    .unwrap()
                    .push(entry);
            }
            parameters
        }
        "/wallet/triggerconstantcontract" => match body["function_selector"].as_str().unwrap() {
            "balanceOf(address)" => {
                let owner = format!("41{}", &body["parameter"].as_str().unwrap()[24..]);
                let balance = ledger.usdt.get(&owner).copied().unwrap_or(0);
                let mut answer = fixture("wallet_triggerconstantcontract.nile_usdt_balanceOf.json");
                answer["constant_result"][0] = json!(format!("{balance:064x}"));
                answer
            }
            _ => {
                let to = format!("41{}", &body["parameter"].as_str().unwrap()[24..64]);
                let mut answer =
                    fixture("wallet_triggerconstantcontract.transfer_estimate_energy_used.json");
                // A first-time holder costs about twice: its balance slot is created.
                if !ledger.usdt.contains_key(&to) {
                    answer["energy_used"] = json!(2 * answer["energy_used"].as_u64().unwrap());
                }
                answer
            }
        },
        "/wallet/broadcasthex" => broadcast(&mut ledger, body["transaction"].as_str().unwrap()),
        "/wallet/gettransactioninfobyid" => ledger.info(body["value"].as_str().unwrap(), false),
        "/walletsolidity/gettransactioninfobyid" => {
            ledger.info(body["value"].as_str().unwrap(), true)
        }
        "/wallet/gettransactioninfobyblocknum" => {
            json!(
                ledger
                    .infos
                    .get(&body["num"].as_u64().unwrap())
                    .cloned()
                    .unwrap_or_default()
            )
        }
        other => panic!("the fake node has no {other}"),
    };
    Json(answer).into_response()
}

/// Serves `ledger` on a local port; a client for it (with an API key) and the shared ledger.
pub async fn fake_node(ledger: Ledger) -> (Tron, Shared) {
    let (url, shared) = serve(ledger).await;
    let mut config = Config::new(url.parse().unwrap());
    config.api_key = Some("secret-api-key-123".into());
    (Tron::new(config).unwrap(), shared)
}

/// Serves `ledger`; its URL and the shared ledger.
pub async fn serve(ledger: Ledger) -> (String, Shared) {
    let shared = Arc::new(Mutex::new(ledger));
    let app = Router::new()
        .fallback(post(handle))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, shared)
}

/// Mines a block whenever the clock reaches the next block's time (every 3 s, the fake chain
/// keeping to real time), for tests that wait for inclusion as on a real chain.
pub fn spawn_miner(ledger: Shared) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis();
            let now = i64::try_from(now).unwrap();
            let mut ledger = ledger.lock().unwrap();
            while block_time(ledger.head + 1) <= now {
                ledger.mine();
            }
        }
    });
}
