//! Addresses, validated before anything is built or stored: a withdrawal to a mistyped
//! address is money gone, so every rule of each chain's format is checked and the reason for
//! a refusal is said.
//!
//! - **Ethereum**: `0x` and 40 hex digits (20 bytes). All lowercase or all uppercase carries no
//!   checksum; mixed case must be the EIP-55 checksum (alloy's keccak). The zero address is
//!   refused (funds sent there are burned). Canonical form: EIP-55.
//! - **TRON**: base58check (double SHA-256 checksum) of 21 bytes starting with 0x41, so the text
//!   starts with `T`. The all-zero account is refused. Canonical form: the base58 text.
//! - **Bitcoin** (rust-bitcoin): base58 P2PKH and P2SH, bech32 for witness v0 (P2WPKH, P2WSH),
//!   bech32m for v1 (P2TR), each for the configured network only. Witness versions 2 to 16 are
//!   refused: no rules spend them yet, so a payment to one can be taken by anyone. Canonical
//!   form: rust-bitcoin's (bech32 in lowercase).

use std::str::FromStr;

use domain::Chain;

/// A Bitcoin network; Ethereum and TRON addresses look the same on every network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Network {
    Mainnet,
    Testnet,
    Signet,
    Regtest,
}

impl Network {
    pub const ALL: &'static [Network] = &[
        Network::Mainnet,
        Network::Testnet,
        Network::Signet,
        Network::Regtest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Network::Mainnet => "mainnet",
            Network::Testnet => "testnet",
            Network::Signet => "signet",
            Network::Regtest => "regtest",
        }
    }

    fn bitcoin(self) -> bitcoin::Network {
        match self {
            Network::Mainnet => bitcoin::Network::Bitcoin,
            Network::Testnet => bitcoin::Network::Testnet,
            Network::Signet => bitcoin::Network::Signet,
            Network::Regtest => bitcoin::Network::Regtest,
        }
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Network::ALL
            .iter()
            .copied()
            .find(|network| network.as_str() == text)
            .ok_or_else(|| format!("unknown network {text:?}: mainnet, testnet, signet or regtest"))
    }
}

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {chain} address {shown:?}: {reason}")]
pub struct AddressError {
    pub chain: Chain,
    /// The input, cut to a readable length.
    pub shown: String,
    pub reason: String,
}

/// An address that passed every check of its chain, in its canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    chain: Chain,
    text: String,
}

impl Address {
    /// Validates `text` as an address on `chain` (and, for Bitcoin, `network`).
    pub fn parse(chain: Chain, network: Network, text: &str) -> Result<Address, AddressError> {
        let refuse = |reason: String| AddressError {
            chain,
            shown: text.chars().take(100).collect(),
            reason,
        };
        if text.is_empty() {
            return Err(refuse("empty".into()));
        }
        if text.trim() != text {
            return Err(refuse("leading or trailing whitespace".into()));
        }
        let canonical = match chain {
            Chain::Ethereum => ethereum(text),
            Chain::Tron => tron(text).map(|_| text.to_string()),
            Chain::Bitcoin => bitcoin_address(text, network),
        }
        .map_err(refuse)?;
        Ok(Address {
            chain,
            text: canonical,
        })
    }

    pub fn chain(&self) -> Chain {
        self.chain
    }

    /// The canonical text (EIP-55 for Ethereum).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The 21 bytes (0x41 and the account id) of a TRON address, as its transactions carry it.
    pub fn tron_bytes(&self) -> Option<[u8; 21]> {
        (self.chain == Chain::Tron)
            .then(|| tron(&self.text).ok())
            .flatten()
    }

    /// The 20 bytes of an Ethereum address.
    pub fn ethereum_bytes(&self) -> Option<[u8; 20]> {
        (self.chain == Chain::Ethereum)
            .then(|| alloy_primitives::Address::from_str(&self.text).ok())
            .flatten()
            .map(|address| address.into_array())
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn ethereum(text: &str) -> Result<String, String> {
    let hex = text
        .strip_prefix("0x")
        .ok_or("an Ethereum address starts with 0x")?;
    if hex.len() != 40 {
        return Err(format!(
            "an Ethereum address is 40 hex digits after 0x, not {}",
            hex.chars().count()
        ));
    }
    if !hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err("only hex digits may follow 0x".into());
    }
    let address = alloy_primitives::Address::from_str(text).map_err(|error| error.to_string())?;
    if address.is_zero() {
        return Err("the zero address: funds sent there are burned".into());
    }
    let checksummed = address.to_checksum(None);
    let mixed_case = hex.bytes().any(|byte| byte.is_ascii_lowercase())
        && hex.bytes().any(|byte| byte.is_ascii_uppercase());
    if mixed_case && checksummed != text {
        return Err(format!(
            "the EIP-55 checksum does not match (mixed case must be exactly {checksummed}); check for a typo"
        ));
    }
    Ok(checksummed)
}

/// The 21 bytes of a TRON base58check address.
fn tron(text: &str) -> Result<[u8; 21], String> {
    if !text.starts_with('T') {
        return Err("a TRON address starts with T".into());
    }
    let bytes = bs58::decode(text)
        .with_check(None)
        .into_vec()
        .map_err(|error| match error {
            bs58::decode::Error::InvalidChecksum { .. } => {
                "the base58check checksum does not match; check for a typo".to_string()
            }
            bs58::decode::Error::InvalidCharacter { character, .. } => {
                format!("{character:?} is not a base58 character")
            }
            other => format!("not base58check: {other}"),
        })?;
    let bytes: [u8; 21] = bytes
        .try_into()
        .map_err(|bytes: Vec<u8>| format!("{} bytes instead of 21", bytes.len()))?;
    if bytes[0] != 0x41 {
        return Err(format!(
            "prefix 0x{:02x} instead of 0x41 (not a TRON address)",
            bytes[0]
        ));
    }
    if bytes[1..].iter().all(|byte| *byte == 0) {
        return Err("the all-zero account: funds sent there are burned".into());
    }
    Ok(bytes)
}

fn bitcoin_address(text: &str, network: Network) -> Result<String, String> {
    use bitcoin::address::{AddressType, NetworkUnchecked};
    let unchecked: bitcoin::Address<NetworkUnchecked> =
        text.parse().map_err(|error| format!("{error}"))?;
    if !unchecked.is_valid_for_network(network.bitcoin()) {
        let other = Network::ALL
            .iter()
            .find(|other| unchecked.is_valid_for_network(other.bitcoin()))
            .map_or_else(|| "another network".to_string(), |other| format!("{other}"));
        return Err(format!(
            "an address for {other}, but this system runs on {network}"
        ));
    }
    let address = unchecked.assume_checked();
    match address.address_type() {
        Some(
            AddressType::P2pkh
            | AddressType::P2sh
            | AddressType::P2wpkh
            | AddressType::P2wsh
            | AddressType::P2tr,
        ) => Ok(address.to_string()),
        _ => Err(
            "a witness version nothing spends yet (anyone could take the funds); only P2PKH, P2SH, P2WPKH, P2WSH and P2TR are paid"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(chain: Chain, text: &str) -> Result<Address, AddressError> {
        Address::parse(chain, Network::Mainnet, text)
    }

    /// The examples of EIP-55 itself.
    const EIP55: &[&str] = &[
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ];

    #[test]
    fn ethereum_follows_eip55() {
        for text in EIP55 {
            assert_eq!(parse(Chain::Ethereum, text).unwrap().as_str(), *text);
            // Unchecksummed forms are accepted and come back checksummed.
            let lower = format!("0x{}", text[2..].to_lowercase());
            assert_eq!(parse(Chain::Ethereum, &lower).unwrap().as_str(), *text);
            let upper = format!("0x{}", text[2..].to_uppercase());
            assert_eq!(parse(Chain::Ethereum, &upper).unwrap().as_str(), *text);
        }
        let typo = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD";
        let error = parse(Chain::Ethereum, typo).unwrap_err();
        assert!(error.reason.contains("EIP-55"), "{error}");
        for (text, reason) in [
            ("5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "starts with 0x"),
            ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeA", "40 hex digits"),
            (
                "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed00",
                "40 hex digits",
            ),
            ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeg", "hex digits"),
            ("0x0000000000000000000000000000000000000000", "zero address"),
            (" 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "whitespace"),
            ("", "empty"),
        ] {
            let error = parse(Chain::Ethereum, text).unwrap_err();
            assert!(error.reason.contains(reason), "{text}: {error}");
        }
    }

    /// Pairs seen in real node responses (`crates/chain-tron/fixtures/recorded`): the base58 form in one
    /// body, the hex form of the same account in another.
    const TRON_PAIRS: &[(&str, &str)] = &[
        // wallet_broadcasttransaction.success_local_node.request.json /
        // wallet_gettransactionbyid.local_node_trx_transfer.json
        (
            "TPswDDCAWhJAZGdHPidFg5nEf8TkNToDX1",
            "4198927ffb9f554dc4a453c64b2e553a02d6df514b",
        ),
        (
            "TUznHJfHe6gdYY7gvWmf6bNZHuPHDZtowf",
            "41d0b69631440f0a494bb51f7eee68ff5c593c00f0",
        ),
        // wallet_triggersmartcontract.shasta_trc20_transfer_visible_true.json
        (
            "TG3XXyExBkPp9nzdajDZsozEu4BkaSJozs",
            "4142a1e39aefa49290f2b3f9ed688d7cecf86cd6e0",
        ),
        // wallet_createtransaction.shasta_visible_true_with_memo.json
        (
            "TYge3Gid6vVaQvnPVRJ6SVwzC64cw2eBkN",
            "41f928b8f3ffb2763e11442cd26ef37b89a7f396f3",
        ),
    ];

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    #[test]
    fn tron_is_base58check_with_prefix_41() {
        for (text, expected) in TRON_PAIRS {
            let address = parse(Chain::Tron, text).unwrap();
            assert_eq!(hex(&address.tron_bytes().unwrap()), *expected);
        }
        let (good, _) = TRON_PAIRS[0];
        // One character changed: the checksum catches it.
        let typo = format!(
            "{}{}",
            &good[..10],
            if &good[10..11] == "A" { "B" } else { "A" }
        ) + &good[11..];
        let error = parse(Chain::Tron, &typo).unwrap_err();
        assert!(error.reason.contains("checksum"), "{error}");
        for (text, reason) in [
            // A Bitcoin P2PKH address: base58check too, but prefix 0x00.
            ("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "starts with T"),
            ("TPswDDCAWhJAZGdHPidFg5nEf8TkNToDX0", "base58 character"),
            ("TPswDDCAWhJAZGdHPidFg5nEf8TkNToD", "checksum"),
            ("T9yD14Nj9j7xAB4dbGeiX9h8unkKHxuWwb", "all-zero"),
        ] {
            let error = parse(Chain::Tron, text).unwrap_err();
            assert!(error.reason.contains(reason), "{text}: {error}");
        }
    }

    #[test]
    fn bitcoin_formats_and_networks() {
        // BIP-173 and BIP-350 valid vectors, and well-known base58 addresses.
        for (text, network, canonical) in [
            (
                "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4",
                Network::Mainnet,
                "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
            ),
            (
                "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
                Network::Testnet,
                "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
            ),
            (
                "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
                Network::Mainnet,
                "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
            ),
            (
                "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2",
                Network::Mainnet,
                "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2",
            ),
            (
                "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy",
                Network::Mainnet,
                "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy",
            ),
        ] {
            let address = Address::parse(Chain::Bitcoin, network, text)
                .unwrap_or_else(|error| panic!("{text}: {error}"));
            assert_eq!(address.as_str(), canonical);
        }
        // The wrong network, said by name.
        let error = Address::parse(
            Chain::Bitcoin,
            Network::Mainnet,
            "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
        )
        .unwrap_err();
        assert!(error.reason.contains("testnet"), "{error}");
        // BIP-350 invalid vectors: v1 with a bech32 checksum, v0 with a bech32m one; a v16
        // program (valid text, but nothing spends it); mixed case.
        for text in [
            "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd",
            "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh",
            "BC1SW50QGDZ25J",
            "bc1qW508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
        ] {
            assert!(
                Address::parse(Chain::Bitcoin, Network::Mainnet, text).is_err(),
                "{text} must be refused"
            );
        }
    }

    proptest! {
        #[test]
        fn ethereum_round_trips_and_every_case_flip_is_caught(bytes in any::<[u8; 20]>(), flip in 0usize..40) {
            prop_assume!(bytes.iter().any(|byte| *byte != 0));
            let checksummed = alloy_primitives::Address::from(bytes).to_checksum(None);
            let address = parse(Chain::Ethereum, &checksummed).unwrap();
            prop_assert_eq!(address.ethereum_bytes(), Some(bytes));
            let mut chars: Vec<char> = checksummed[2..].chars().collect();
            let letters = chars.iter().filter(|c| c.is_ascii_alphabetic()).count();
            if chars[flip].is_ascii_alphabetic() && letters > 1 {
                chars[flip] = if chars[flip].is_ascii_lowercase() { chars[flip].to_ascii_uppercase() } else { chars[flip].to_ascii_lowercase() };
                let flipped = format!("0x{}", chars.iter().collect::<String>());
                let still_mixed = chars.iter().any(char::is_ascii_lowercase) && chars.iter().any(char::is_ascii_uppercase);
                // A flip that leaves mixed case breaks the checksum; one that makes the text
                // single-case turns the checksum off, and the address is still the same. (A
                // checksum may itself be single-case: then any flip makes it mixed and wrong.)
                match parse(Chain::Ethereum, &flipped) {
                    Ok(same) => prop_assert!(!still_mixed && same.as_str() == checksummed, "{flipped}"),
                    Err(error) => prop_assert!(still_mixed, "{flipped}: {error}"),
                }
            }
        }

        #[test]
        fn tron_round_trips_and_typos_are_caught(account in any::<[u8; 20]>(), position in 1usize..34, replacement in 0usize..58) {
            prop_assume!(account.iter().any(|byte| *byte != 0));
            let mut bytes = vec![0x41u8];
            bytes.extend_from_slice(&account);
            let text = bs58::encode(&bytes).with_check().into_string();
            let address = parse(Chain::Tron, &text).unwrap();
            prop_assert_eq!(address.tron_bytes().map(|bytes| bytes.to_vec()), Some(bytes));
            const ALPHABET: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
            let mut typo = text.clone().into_bytes();
            prop_assume!(typo[position] != ALPHABET[replacement]);
            typo[position] = ALPHABET[replacement];
            let typo = String::from_utf8(typo).unwrap();
            prop_assert!(parse(Chain::Tron, &typo).is_err(), "{typo}");
        }

        #[test]
        fn bitcoin_segwit_addresses_hold_to_their_network(hash in any::<[u8; 20]>(), network in 0usize..4) {
            use bitcoin::hashes::Hash;
            let network = Network::ALL[network];
            let key_hash = bitcoin::WPubkeyHash::from_byte_array(hash);
            let script = bitcoin::ScriptBuf::new_p2wpkh(&key_hash);
            let text = bitcoin::Address::from_script(&script, network.bitcoin()).unwrap().to_string();
            prop_assert!(Address::parse(Chain::Bitcoin, network, &text).is_ok(), "{text}");
            for other in Network::ALL {
                // Testnet and signet share their prefixes; every other pair must differ.
                let shared = matches!((network, *other), (Network::Testnet, Network::Signet) | (Network::Signet, Network::Testnet));
                if *other != network && !shared {
                    prop_assert!(Address::parse(Chain::Bitcoin, *other, &text).is_err(), "{text} on {other}");
                }
            }
        }
    }
}
