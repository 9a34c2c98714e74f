//! `coinsensei tx build`: a TRON transfer built and signed offline, for air-gapped use. The
//! reference block, timestamps and fee limit are given on the command line instead of asked
//! from a node, so nothing here opens a connection: the only inputs are the flags, the
//! configuration (for the fee-limit cap) and the keystore. The output (raw_data, txid,
//! signature) is what an online machine broadcasts; no secret is ever printed.

use std::process::ExitCode;

use anyhow::{Context, bail};
use chain::address::{Address, Network};
use chain::provider::{Asset, Payment};
use chain_tron::transaction::{self, RefBlock, Window};
use domain::{Amount, Chain};
use signer::Signer;

use crate::commands::keys::KeystoreArgs;
use crate::config::Settings;

/// What to build, as given on the command line.
pub struct TxBuild {
    pub chain: Chain,
    pub index: u32,
    pub to: String,
    pub asset: String,
    pub amount: String,
    pub ref_block_id: String,
    pub timestamp: i64,
    pub expiration: i64,
    pub fee_limit: Option<i64>,
    pub as_json: bool,
}

pub fn build(
    settings: &Settings,
    keystore: &KeystoreArgs,
    request: TxBuild,
) -> anyhow::Result<ExitCode> {
    // Everything the flags say is checked before the keystore is opened.
    if request.chain != Chain::Tron {
        bail!(
            "tx build supports --chain tron only ({} transactions are built by its workers)",
            request.chain
        );
    }
    let to = Address::parse(Chain::Tron, Network::Mainnet, &request.to)
        .with_context(|| format!("--to {:?}", request.to))?;
    let catalogue = domain::AssetCatalogue::mainnet();
    let listed = catalogue.get(Chain::Tron, &request.asset.to_uppercase())?;
    let amount = Amount::parse_positive(&request.amount, listed.decimals).with_context(|| {
        format!(
            "--amount {:?} ({} has {} decimals)",
            request.amount, listed.symbol, listed.decimals
        )
    })?;
    let asset = match &listed.contract {
        None => Asset::Native,
        Some(contract) => Asset::Token(Address::parse(Chain::Tron, Network::Mainnet, contract)?),
    };
    let cap = settings.tron.fee_limit_max_sun;
    let fee_limit = match (&asset, request.fee_limit) {
        (Asset::Native, None) => 0,
        (Asset::Native, Some(_)) => {
            bail!("--fee-limit applies to TRC-20 transfers only: a TRX transfer burns no energy")
        }
        (Asset::Token(_), None) => bail!(
            "a {} transfer needs --fee-limit SUN: the most TRX (in sun) it may burn for energy, at most {cap} (tron_fee_limit_max_sun)",
            listed.symbol
        ),
        (Asset::Token(_), Some(limit)) if limit <= 0 || limit > cap => {
            bail!("--fee-limit {limit} is out of range: 1 to {cap} sun (tron_fee_limit_max_sun)")
        }
        (Asset::Token(_), Some(limit)) => limit,
    };
    let window = Window {
        ref_block: RefBlock::from_hex(&request.ref_block_id).context("--ref-block-id")?,
        timestamp: request.timestamp,
        expiration: request.expiration,
        fee_limit,
    };
    window.check().context("--timestamp and --expiration")?;

    let signer = keystore.signer()?;
    let from = signer.address(Chain::Tron, request.index)?;
    let payment = Payment {
        from_index: request.index,
        from,
        to,
        asset,
        amount,
    };
    let unsigned = transaction::build(&payment, &window)?;
    let raw_data_hex = hex::encode(unsigned.raw_data());
    let signature = signer.sign_digest(Chain::Tron, request.index, unsigned.txid())?;
    // Attaching checks the signature recovers the sender; reading the bytes back checks
    // they say the payment asked for.
    let signed = transaction::attach(unsigned, &signature.0)?;
    let decoded = transaction::parse(&signed)?;
    anyhow::ensure!(
        decoded.parsed.matches(&payment),
        "the signed transaction does not say the payment asked for"
    );
    let signature = hex::encode(signature.0);
    if request.as_json {
        let output = serde_json::json!({
            "raw_data_hex": raw_data_hex,
            "txid": signed.txid,
            "signature": signature,
        });
        println!("{}", serde_json::to_string_pretty(&output)?);
    } else {
        println!("raw_data_hex {raw_data_hex}");
        println!("txid {}", signed.txid);
        println!("signature {signature}");
    }
    Ok(ExitCode::SUCCESS)
}
