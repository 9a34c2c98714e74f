//! Talking to a test's anvil over JSON-RPC, as the end-to-end tests do to set the chain up
//! (deploy the test token, send deposits, mine): a call, and a transaction from one of its
//! unlocked accounts waited for to its receipt.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::{Anvil, wait_for};

/// The ERC-20 the tests deploy (its creation bytecode).
pub const TOKEN_BIN: &str = include_str!("../../../chain-ethereum/fixtures/erc20/TestToken.bin");

/// One JSON-RPC call; an error answer fails the test, naming the method.
pub async fn rpc(anvil: &Anvil, method: &str, params: Value) -> Value {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let answer: Value = reqwest::Client::new()
        .post(&anvil.url)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer["error"].is_null(), "{method}: {answer}");
    answer["result"].clone()
}

/// A hex quantity (`"0x1f"`) as a number.
pub fn quantity(value: &Value) -> u128 {
    u128::from_str_radix(value.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// Sends `transaction` from the unlocked account `from` and waits for its receipt.
pub async fn send_from(anvil: &Anvil, from: &str, transaction: Value) -> Value {
    let mut transaction = transaction;
    transaction["from"] = json!(from);
    let txid = rpc(anvil, "eth_sendTransaction", json!([transaction])).await;
    wait_for("a receipt", Duration::from_secs(30), || async {
        let receipt = rpc(anvil, "eth_getTransactionReceipt", json!([txid])).await;
        (!receipt.is_null()).then_some(receipt)
    })
    .await
}

/// `transfer(to, amount)` of an ERC-20, as call data.
pub fn transfer_data(to: &str, amount: u128) -> String {
    format!("0xa9059cbb{}{amount:064x}", word(to))
}

/// The call data of `signature` (`name(types)`: its selector) with static 32-byte `words`
/// (hex without 0x), then dynamic arrays of words, each after the head.
pub fn call_data(signature: &str, words: &[String], arrays: &[Vec<String>]) -> String {
    let selector = &alloy_primitives::keccak256(signature.as_bytes())[..4];
    let mut head = String::new();
    let mut tail = String::new();
    let head_words = words.len() + arrays.len();
    for word in words {
        head.push_str(word);
    }
    for array in arrays {
        let offset = 32 * head_words + tail.len() / 2;
        head.push_str(&format!("{offset:064x}"));
        tail.push_str(&format!("{:064x}", array.len()));
        for word in array {
            tail.push_str(word);
        }
    }
    format!("0x{}{head}{tail}", alloy_primitives::hex::encode(selector))
}

/// Payments as the two arrays of a batch call: the recipients, then the amounts.
pub fn payment_arrays(payments: &[(String, u128)]) -> [Vec<String>; 2] {
    [
        payments.iter().map(|(to, _)| word(to)).collect(),
        payments
            .iter()
            .map(|(_, amount)| format!("{amount:064x}"))
            .collect(),
    ]
}

/// An address as a 32-byte ABI word, hex without 0x.
pub fn word(address: &str) -> String {
    format!("{:0>64}", address.trim_start_matches("0x").to_lowercase())
}

/// The ETH balance of `address` at the head, in wei.
pub async fn eth_balance(anvil: &Anvil, address: &str) -> u128 {
    quantity(&rpc(anvil, "eth_getBalance", json!([address, "latest"])).await)
}

/// The `token` balance of `address` at the head, in base units.
pub async fn token_balance(anvil: &Anvil, token: &str, address: &str) -> u128 {
    let call = json!({"to": token, "data": format!("0x70a08231{}", word(address))});
    quantity(&rpc(anvil, "eth_call", json!([call, "latest"])).await)
}

/// The number of transactions `address` has had mined.
pub async fn nonce(anvil: &Anvil, address: &str) -> u128 {
    quantity(&rpc(anvil, "eth_getTransactionCount", json!([address, "latest"])).await)
}

/// The node's head.
pub async fn head(anvil: &Anvil) -> u64 {
    quantity(&rpc(anvil, "eth_blockNumber", json!([])).await) as u64
}
