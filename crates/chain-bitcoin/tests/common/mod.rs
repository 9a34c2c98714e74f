//! What the regtest suites share: a private node funded by mining to the hot wallet's
//! receive key 0, the wallet's unspent outputs kept in step with it, signing checked by
//! Bitcoin Core's script interpreter, and another wallet's addresses to pay.
#![allow(dead_code, reason = "each test file uses part of it")]

use std::time::Duration;

use bitcoin::consensus::encode;
use chain::address::{Address, Network};
use chain::provider::{ChainRead, Keychain, SignedTransaction};
use chain_bitcoin::{Bitcoin, FeePolicy, Rpc, UnsignedPayout, UtxoSet};
use domain::{Amount, Chain};
use serde_json::json;
use signer::{InProcessSigner, Mnemonic, Signer};
use testkit::Bitcoind;

pub const MNEMONIC: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
/// Coinbase outputs are spendable after 100 blocks.
pub use chain_bitcoin::utxo::COINBASE_MATURITY;

/// An empty set watching the wallet's receive keys 0..4 and change keys 0..200.
pub fn wallet_utxos(bitcoin: &Bitcoin) -> UtxoSet {
    let utxos = UtxoSet::new();
    for index in 0..4 {
        utxos.watch(
            bitcoin.key_script(Keychain::Receive, index).unwrap(),
            Keychain::Receive,
            index,
        );
    }
    for index in 0..200 {
        utxos.watch(
            bitcoin.key_script(Keychain::Change, index).unwrap(),
            Keychain::Change,
            index,
        );
    }
    utxos
}

/// Mines `blocks` to an address that is not ours (no set is synced).
pub async fn mine_elsewhere(bitcoin: &Bitcoin, blocks: u64) {
    bitcoin
        .rpc()
        .call("generatetoaddress", json!([blocks, ELSEWHERE]))
        .await
        .unwrap();
}

/// An address of no wallet here (BIP173's regtest example).
pub const ELSEWHERE: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

pub struct Setup {
    pub node: Bitcoind,
    pub bitcoin: Bitcoin,
    pub signer: InProcessSigner,
    pub utxos: UtxoSet,
    pub applied: u64,
}

impl Setup {
    pub async fn start() -> Setup {
        Setup::on(Bitcoind::start().await, true).await
    }

    /// On a node that keeps no transaction index (`getrawtransaction` finds no mined
    /// transaction, as while a node rebuilds its index), through `Bitcoin::new`: `connect`
    /// would refuse it.
    pub async fn start_without_index() -> Setup {
        Setup::on(Bitcoind::start_with(&["-txindex=0"]).await, false).await
    }

    async fn on(node: Bitcoind, connect: bool) -> Setup {
        let signer = InProcessSigner::new(&Mnemonic::parse(MNEMONIC).unwrap(), Network::Regtest);
        let rpc = Rpc::with_cookie(&node.url, &node.cookie(), Duration::from_secs(30)).unwrap();
        let xpub = signer.xpub(Chain::Bitcoin).unwrap();
        let bitcoin = if connect {
            Bitcoin::connect(rpc, Network::Regtest, xpub, FeePolicy::default())
                .await
                .unwrap()
        } else {
            Bitcoin::new(rpc, Network::Regtest, xpub, FeePolicy::default()).unwrap()
        };
        let utxos = wallet_utxos(&bitcoin);
        let mut setup = Setup {
            node,
            bitcoin,
            signer,
            utxos,
            applied: 0,
        };
        // Eleven mature coinbase outputs of 50 BTC to receive key 0.
        let hot = setup.bitcoin.key_address(Keychain::Receive, 0).unwrap();
        setup
            .mine_to(COINBASE_MATURITY + 10, &hot.to_string())
            .await;
        setup
    }

    pub async fn mine_to(&mut self, blocks: u64, address: &str) {
        self.bitcoin
            .rpc()
            .call("generatetoaddress", json!([blocks, address]))
            .await
            .unwrap();
        self.sync().await;
    }

    /// Mines to an address that is not ours.
    pub async fn mine(&mut self, blocks: u64) {
        self.mine_to(blocks, "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080")
            .await;
    }

    pub async fn sync(&mut self) -> chain_bitcoin::utxo::Synced {
        let synced = self.utxos.sync(&self.bitcoin, 1, 10_000).await.unwrap();
        self.applied = self.utxos.last().unwrap().0;
        synced
    }

    pub async fn tip(&self) -> u64 {
        self.bitcoin.tip().await.unwrap().head
    }

    pub fn sign(&self, payout: &UnsignedPayout) -> SignedTransaction {
        let signatures = self
            .signer
            .sign_payloads(Chain::Bitcoin, &self.bitcoin.payloads(payout).unwrap())
            .unwrap();
        let signed = self.bitcoin.combine(payout, &signatures).unwrap();
        verify_with_core(payout, &signed);
        signed
    }

    /// Selects, locks and builds for `payouts` at `rate`, change to `change`.
    pub async fn build(
        &self,
        id: &str,
        payouts: &[(Address, Amount)],
        rate: u64,
        change: u32,
    ) -> UnsignedPayout {
        let tip = self.tip().await;
        self.utxos
            .reserve(id, tip, COINBASE_MATURITY, |available| {
                let payout = self
                    .bitcoin
                    .build_payout(payouts, available, rate, change)?;
                let inputs = payout.inputs.clone();
                Ok((payout, inputs))
            })
            .unwrap()
    }
}

/// Every input checked by Bitcoin Core's own script interpreter.
pub fn verify_with_core(payout: &UnsignedPayout, signed: &SignedTransaction) {
    let tx: bitcoin::Transaction = encode::deserialize(&signed.raw).unwrap();
    assert_eq!(tx.compute_txid().to_string(), signed.txid);
    for (position, utxo) in payout.inputs.iter().enumerate() {
        let script = {
            let keychain = utxo.keychain;
            let signer =
                InProcessSigner::new(&Mnemonic::parse(MNEMONIC).unwrap(), Network::Regtest);
            let xpub = signer.xpub(Chain::Bitcoin).unwrap();
            let key = xpub.public_key(keychain, utxo.index).unwrap();
            bitcoin::ScriptBuf::new_p2wpkh(&bitcoin::CompressedPublicKey(key).wpubkey_hash())
        };
        bitcoinconsensus::verify(script.as_bytes(), utxo.value, &signed.raw, None, position)
            .unwrap_or_else(|error| panic!("input {position}: {error:?}"));
        // And a wrong amount fails: the check can fail.
        assert!(
            bitcoinconsensus::verify(
                script.as_bytes(),
                utxo.value + 1,
                &signed.raw,
                None,
                position
            )
            .is_err()
        );
    }
}

pub fn user(index: u32) -> Address {
    // Addresses of another wallet (BIP84 receive keys of a second mnemonic).
    let other = InProcessSigner::new(
        &Mnemonic::parse(
            "legal winner thank year wave sausage worth useful legal winner thank yellow",
        )
        .unwrap(),
        Network::Regtest,
    );
    other.address(Chain::Bitcoin, index).unwrap()
}

pub async fn output_of(setup: &Setup, txid: &str, vout: usize) -> (String, u64, u64) {
    let tx = setup
        .bitcoin
        .rpc()
        .call("getrawtransaction", json!([txid, 1]))
        .await
        .unwrap();
    let output = &tx["vout"][vout];
    let sat =
        chain_bitcoin::btc_text_to_sat(&output["value"].as_number().unwrap().to_string()).unwrap();
    (
        output["scriptPubKey"]["address"]
            .as_str()
            .unwrap()
            .to_string(),
        sat,
        tx["confirmations"].as_u64().unwrap_or(0),
    )
}
