//! The only place private keys live.
//!
//! A BIP39 mnemonic (24 words; `bip39`) gives the seed; BIP32 (`bitcoin::bip32`, one
//! implementation for all three chains) derives each chain's keys on its path:
//!
//! | chain    | account path (its xpub derives deposit addresses) | key `i`            |
//! |----------|----------------------------------------------------|--------------------|
//! | TRON     | m/44'/195'/0'                                      | account/0/i        |
//! | Ethereum | m/44'/60'/0'                                       | account/0/i        |
//! | Bitcoin  | m/84'/0'/0' (coin type 1' on test networks)        | account/0/i (P2WPKH); change account/1/i |
//!
//! Addresses: Ethereum is the last 20 bytes of keccak256 of the uncompressed public key
//! (EIP-55 text); TRON is 0x41 and the same 20 bytes in base58check; Bitcoin is P2WPKH of the
//! compressed key. [`Xpub`] derives the same addresses from the account's extended public key
//! alone, so deposit address generation needs no secret.
//!
//! Deposit addresses live in their own account, [`DEPOSIT_ACCOUNT`] (m/44'/195'/1',
//! m/44'/60'/1', m/84'/0'/1'), never in account 0 where the hot wallet and other working keys
//! are: issuing the next deposit address can never hand out a hot wallet's key, whatever the
//! hot wallet's index. [`InProcessSigner::deposit_xpub`] exports that account's xpub, and
//! [`Xpub::parse_deposit`] refuses any other account's. A deposit address's key is
//! [`Keychain::Deposit`] (account 1'/0/i): consolidation signs with it through
//! [`DepositSigner`], and a Bitcoin payout that spends a credited deposit where it lies signs
//! that input with it.
//!
//! Secrets ([`Mnemonic`], [`InProcessSigner`]) have no `Display`, no `Serialize`, and a
//! `Debug` that prints nothing secret; they are wiped from memory when dropped.

pub mod keystore;

use std::str::FromStr;

use bitcoin::bip32::{ChildNumber, DerivationPath, Xpriv, Xpub as BitcoinXpub};
use bitcoin::secp256k1::{self, Message, Secp256k1};
use chain::address::{Address, Network};
pub use chain::provider::Keychain;
use domain::Chain;
use zeroize::{Zeroize, Zeroizing};

/// What went wrong; never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("invalid mnemonic: {0}")]
    Mnemonic(String),
    #[error("key derivation failed: {0}")]
    Derivation(String),
    #[error("invalid extended public key: {0}")]
    Xpub(String),
    #[error("address index {0} is out of range (0 to 2^31 - 1)")]
    Index(u32),
    #[error(transparent)]
    Keystore(#[from] keystore::KeystoreError),
}

/// A BIP39 mnemonic. Shown once, when made; wiped when dropped.
pub struct Mnemonic(bip39::Mnemonic);

impl std::fmt::Debug for Mnemonic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mnemonic(..)")
    }
}

impl Mnemonic {
    /// A new 24-word mnemonic from 256 bits of the operating system's randomness.
    pub fn generate() -> Mnemonic {
        use rand::TryRngCore;
        let mut entropy = Zeroizing::new([0u8; 32]);
        // Straight from the operating system, not a user-space generator seeded from it.
        rand::rngs::OsRng
            .try_fill_bytes(&mut entropy[..])
            .expect("the operating system's random source is available");
        Mnemonic(
            bip39::Mnemonic::from_entropy(&entropy[..])
                .expect("32 bytes is a valid entropy length"),
        )
    }

    /// Reads a mnemonic (English words, any case and spacing); the checksum word must match.
    pub fn parse(phrase: &str) -> Result<Mnemonic, SignerError> {
        let normalized = Zeroizing::new(
            phrase
                .split_whitespace()
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
                .join(" "),
        );
        bip39::Mnemonic::parse_in_normalized(bip39::Language::English, &normalized)
            .map(Mnemonic)
            // bip39's messages name a bad word's position, never the words themselves.
            .map_err(|error| SignerError::Mnemonic(error.to_string()))
    }

    /// The words, for showing once to the operator who writes them down.
    pub fn phrase(&self) -> Zeroizing<String> {
        Zeroizing::new(self.0.words().collect::<Vec<_>>().join(" "))
    }

    pub fn word_count(&self) -> usize {
        self.0.word_count()
    }

    fn seed(&self) -> Zeroizing<[u8; 64]> {
        Zeroizing::new(self.0.to_seed_normalized(""))
    }
}

impl Drop for Mnemonic {
    fn drop(&mut self) {
        // bip39 (with its `zeroize` feature) wipes the words; say it here too.
        self.0.zeroize();
    }
}

/// The BIP44 account (hardened) whose keys are the deposit addresses.
pub const DEPOSIT_ACCOUNT: u32 = 1;

/// The deposit account's derivation path of `chain` on `network` (account 0's, with account
/// [`DEPOSIT_ACCOUNT`]).
pub fn deposit_account_path(chain: Chain, network: Network) -> DerivationPath {
    let mut path: Vec<ChildNumber> = account_path(chain, network).into();
    if let Some(last) = path.last_mut() {
        *last = ChildNumber::Hardened {
            index: DEPOSIT_ACCOUNT,
        };
    }
    path.into()
}

/// The account-level derivation path of `chain` on `network`.
pub fn account_path(chain: Chain, network: Network) -> DerivationPath {
    let text = match (chain, network) {
        (Chain::Tron, _) => "m/44'/195'/0'",
        (Chain::Ethereum, _) => "m/44'/60'/0'",
        (Chain::Bitcoin, Network::Mainnet) => "m/84'/0'/0'",
        (Chain::Bitcoin, _) => "m/84'/1'/0'",
    };
    DerivationPath::from_str(text).expect("the account paths are valid")
}

fn bip32_network(network: Network) -> bitcoin::NetworkKind {
    match network {
        Network::Mainnet => bitcoin::NetworkKind::Main,
        _ => bitcoin::NetworkKind::Test,
    }
}

/// account/branch/index: the receive keys on branch 0, Bitcoin's change keys on branch 1.
fn key_path(keychain: Keychain, index: u32) -> Result<[ChildNumber; 2], SignerError> {
    let index = ChildNumber::from_normal_idx(index).map_err(|_| SignerError::Index(index))?;
    Ok([
        ChildNumber::Normal {
            index: keychain.branch(),
        },
        index,
    ])
}

/// The address of a public key on `chain`.
fn address_of(
    chain: Chain,
    network: Network,
    key: &secp256k1::PublicKey,
) -> Result<Address, SignerError> {
    let text = match chain {
        Chain::Ethereum => {
            let account = ethereum_account(key);
            alloy_primitives::Address::from(account).to_checksum(None)
        }
        Chain::Tron => {
            let mut bytes = vec![0x41u8];
            bytes.extend_from_slice(&ethereum_account(key));
            bs58::encode(bytes).with_check().into_string()
        }
        Chain::Bitcoin => {
            let hrp = match network {
                Network::Mainnet => bitcoin::KnownHrp::Mainnet,
                Network::Testnet | Network::Signet => bitcoin::KnownHrp::Testnets,
                Network::Regtest => bitcoin::KnownHrp::Regtest,
            };
            bitcoin::Address::p2wpkh(&bitcoin::CompressedPublicKey(*key), hrp).to_string()
        }
    };
    Address::parse(chain, network, &text)
        .map_err(|error| SignerError::Derivation(error.to_string()))
}

/// keccak256 of the uncompressed key without its 0x04 tag, last 20 bytes.
fn ethereum_account(key: &secp256k1::PublicKey) -> [u8; 20] {
    let uncompressed = key.serialize_uncompressed();
    let hash = alloy_primitives::keccak256(&uncompressed[1..]);
    let mut account = [0u8; 20];
    account.copy_from_slice(&hash[12..]);
    account
}

/// An account-level extended public key: derives deposit addresses without any secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xpub {
    chain: Chain,
    network: Network,
    key: BitcoinXpub,
}

impl Xpub {
    /// Reads an xpub (or tpub) exported by [`InProcessSigner::xpub`].
    pub fn parse(chain: Chain, network: Network, text: &str) -> Result<Xpub, SignerError> {
        let key = BitcoinXpub::from_str(text.trim())
            .map_err(|error| SignerError::Xpub(error.to_string()))?;
        if key.network != bip32_network(network) {
            return Err(SignerError::Xpub(format!(
                "this key is for {:?} networks, not {network}",
                key.network
            )));
        }
        if key.depth != 3 {
            return Err(SignerError::Xpub(format!(
                "an account-level key has depth 3 (m/purpose'/coin'/account'); this one has {}",
                key.depth
            )));
        }
        Ok(Xpub {
            chain,
            network,
            key,
        })
    }

    /// Reads the deposit account's xpub (exported by [`InProcessSigner::deposit_xpub`]):
    /// an account-level key whose last step is account [`DEPOSIT_ACCOUNT`]', so a working
    /// account's key (account 0, the hot wallet's) is refused.
    pub fn parse_deposit(chain: Chain, network: Network, text: &str) -> Result<Xpub, SignerError> {
        let xpub = Xpub::parse(chain, network, text)?;
        let expected = ChildNumber::Hardened {
            index: DEPOSIT_ACCOUNT,
        };
        if xpub.key.child_number != expected {
            return Err(SignerError::Xpub(format!(
                "this is the key of account {}, not of the deposit account {DEPOSIT_ACCOUNT}' ({}); export it with `coinsensei keys xpub --chain {chain} --deposit`",
                xpub.key.child_number,
                deposit_account_path(chain, network)
            )));
        }
        Ok(xpub)
    }

    /// The deposit address with index `index` (account/0/index).
    pub fn address(&self, index: u32) -> Result<Address, SignerError> {
        self.address_on(Keychain::Receive, index)
    }

    /// The address of key `index` on `keychain` (account/branch/index).
    pub fn address_on(&self, keychain: Keychain, index: u32) -> Result<Address, SignerError> {
        address_of(self.chain, self.network, &self.public_key(keychain, index)?)
    }

    /// Whether this is the deposit account's key (its last step is [`DEPOSIT_ACCOUNT`]').
    pub fn is_deposit_account(&self) -> bool {
        self.key.child_number
            == ChildNumber::Hardened {
                index: DEPOSIT_ACCOUNT,
            }
    }

    /// The public key of key `index` on `keychain` (a Bitcoin input's witness carries it).
    /// [`Keychain::Deposit`] is derived only from the deposit account's key: another
    /// account's key is refused, never read as that account's receive branch.
    pub fn public_key(
        &self,
        keychain: Keychain,
        index: u32,
    ) -> Result<secp256k1::PublicKey, SignerError> {
        if keychain == Keychain::Deposit && !self.is_deposit_account() {
            return Err(SignerError::Derivation(format!(
                "deposit key {index} is not derived from the key of account {}: the deposit \
                 account's key ({}) derives deposit addresses",
                self.key.child_number,
                deposit_account_path(self.chain, self.network)
            )));
        }
        let secp = Secp256k1::verification_only();
        let child = self
            .key
            .derive_pub(&secp, &key_path(keychain, index)?)
            .map_err(|error| SignerError::Derivation(error.to_string()))?;
        Ok(child.public_key)
    }
}

impl std::fmt::Display for Xpub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.key.fmt(f)
    }
}

/// A 65-byte recoverable secp256k1 signature: r, s and the recovery id (0 or 1), as TRON
/// transactions carry it (Ethereum adds its own offset to the last byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoverableSignature(pub [u8; 65]);

/// What signs. In-process today ([`InProcessSigner`]); a separate signer process with its
/// own policy check implements the same trait later, and nothing else changes.
pub trait Signer: Send + Sync {
    /// The address of key `index` on `chain`.
    fn address(&self, chain: Chain, index: u32) -> Result<Address, SignerError>;
    /// The account-level extended public key of `chain` (for deposit addresses).
    fn xpub(&self, chain: Chain) -> Result<Xpub, SignerError>;
    /// Signs a 32-byte digest (a TRON txid, an Ethereum signing hash) with key `index`.
    fn sign_digest(
        &self,
        chain: Chain,
        index: u32,
        digest: [u8; 32],
    ) -> Result<RecoverableSignature, SignerError> {
        self.sign_digest_on(chain, Keychain::Receive, index, digest)
    }
    /// Signs a digest with key `index` of `keychain` (a Bitcoin input spending change is
    /// signed with a change key, one spending a deposit where it lies with
    /// [`Keychain::Deposit`]: the deposit address's key).
    fn sign_digest_on(
        &self,
        chain: Chain,
        keychain: Keychain,
        index: u32,
        digest: [u8; 32],
    ) -> Result<RecoverableSignature, SignerError>;
    /// Signs each of a transaction's payloads with the key it names: the signatures its
    /// adapter's `combine` takes, in payload order.
    fn sign_payloads(
        &self,
        chain: Chain,
        payloads: &[chain::provider::SigningPayload],
    ) -> Result<Vec<[u8; 65]>, SignerError> {
        payloads
            .iter()
            .map(|payload| {
                self.sign_digest_on(chain, payload.keychain, payload.index, payload.digest)
                    .map(|signature| signature.0)
            })
            .collect()
    }
}

/// The seed in this process's memory (development, and the air-gapped `tx build`).
pub struct InProcessSigner {
    seed: Zeroizing<[u8; 64]>,
    network: Network,
    secp: Secp256k1<secp256k1::All>,
    /// Each chain's keychain keys (m/purpose'/coin'/account'/branch), by (chain, account,
    /// branch), derived once: a signature then derives one level, not six from the seed. As
    /// secret as the seed, and wiped with the signer.
    keychains: std::sync::Mutex<std::collections::HashMap<(Chain, u32, u32), PrivateKey>>,
}

impl std::fmt::Debug for InProcessSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessSigner")
            .field("network", &self.network)
            .finish_non_exhaustive()
    }
}

/// A derived private key, wiped when dropped.
struct PrivateKey(Xpriv);

impl Drop for PrivateKey {
    fn drop(&mut self) {
        self.0.private_key.non_secure_erase();
    }
}

impl InProcessSigner {
    pub fn new(mnemonic: &Mnemonic, network: Network) -> InProcessSigner {
        InProcessSigner {
            seed: mnemonic.seed(),
            network,
            secp: Secp256k1::new(),
            keychains: std::sync::Mutex::default(),
        }
    }

    fn derive(&self, path: &[ChildNumber]) -> Result<PrivateKey, SignerError> {
        let master = PrivateKey(
            Xpriv::new_master(bip32_network(self.network), &self.seed[..])
                .map_err(|error| SignerError::Derivation(error.to_string()))?,
        );
        master
            .0
            .derive_priv(&self.secp, &path)
            .map(PrivateKey)
            .map_err(|error| SignerError::Derivation(error.to_string()))
    }

    /// The deposit account's extended public key of `chain`: it derives every deposit address
    /// (key `i` of the account's receive branch), and nothing of account 0.
    pub fn deposit_xpub(&self, chain: Chain) -> Result<Xpub, SignerError> {
        let path: Vec<ChildNumber> = deposit_account_path(chain, self.network).into();
        let account = self.derive(&path)?;
        Ok(Xpub {
            chain,
            network: self.network,
            key: BitcoinXpub::from_priv(&self.secp, &account.0),
        })
    }

    fn key(&self, chain: Chain, keychain: Keychain, index: u32) -> Result<PrivateKey, SignerError> {
        self.key_in(chain, 0, keychain, index)
    }

    /// Key `index` of `keychain` in `account` (0, the working keys; [`DEPOSIT_ACCOUNT`]);
    /// [`Keychain::Deposit`] is the deposit account's receive branch whatever `account` is.
    fn key_in(
        &self,
        chain: Chain,
        account: u32,
        keychain: Keychain,
        index: u32,
    ) -> Result<PrivateKey, SignerError> {
        // A deposit address's key is in the deposit account whoever asks for it.
        let (account, keychain) = match keychain {
            Keychain::Deposit => (DEPOSIT_ACCOUNT, Keychain::Receive),
            other => (account, other),
        };
        let [branch, child] = key_path(keychain, index)?;
        let mut keychains = self
            .keychains
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let parent = match keychains.entry((chain, account, keychain.branch())) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let mut path: Vec<ChildNumber> = if account == DEPOSIT_ACCOUNT {
                    deposit_account_path(chain, self.network).into()
                } else {
                    account_path(chain, self.network).into()
                };
                path.push(branch);
                entry.insert(self.derive(&path)?)
            }
        };
        parent
            .0
            .derive_priv(&self.secp, &[child])
            .map(PrivateKey)
            .map_err(|error| SignerError::Derivation(error.to_string()))
    }
}

/// The deposit account's keys as a [`Signer`]: key `i` is deposit address `i`
/// (m/44'/60'/1'/0/i on Ethereum), so a wallet built over it pays *from* deposit addresses
/// (consolidation sweeps) through the same nonce path as the hot wallet, without any index of
/// account 0 being reachable through it. Only consolidation holds one.
#[derive(Debug, Clone)]
pub struct DepositSigner(std::sync::Arc<InProcessSigner>);

impl DepositSigner {
    pub fn new(signer: std::sync::Arc<InProcessSigner>) -> DepositSigner {
        DepositSigner(signer)
    }
}

impl Signer for DepositSigner {
    fn address(&self, chain: Chain, index: u32) -> Result<Address, SignerError> {
        let key = self
            .0
            .key_in(chain, DEPOSIT_ACCOUNT, Keychain::Receive, index)?;
        let public = secp256k1::PublicKey::from_secret_key(&self.0.secp, &key.0.private_key);
        address_of(chain, self.0.network, &public)
    }

    fn xpub(&self, chain: Chain) -> Result<Xpub, SignerError> {
        self.0.deposit_xpub(chain)
    }

    fn sign_digest_on(
        &self,
        chain: Chain,
        keychain: Keychain,
        index: u32,
        digest: [u8; 32],
    ) -> Result<RecoverableSignature, SignerError> {
        let key = self.0.key_in(chain, DEPOSIT_ACCOUNT, keychain, index)?;
        Ok(sign_with(&self.0.secp, &key, digest))
    }
}

fn sign_with(
    secp: &Secp256k1<secp256k1::All>,
    key: &PrivateKey,
    digest: [u8; 32],
) -> RecoverableSignature {
    let signature = secp.sign_ecdsa_recoverable(&Message::from_digest(digest), &key.0.private_key);
    let (id, compact) = signature.serialize_compact();
    let mut bytes = [0u8; 65];
    bytes[..64].copy_from_slice(&compact);
    bytes[64] = u8::try_from(id.to_i32()).expect("a recovery id is 0 to 3");
    RecoverableSignature(bytes)
}

impl Signer for InProcessSigner {
    fn address(&self, chain: Chain, index: u32) -> Result<Address, SignerError> {
        let key = self.key(chain, Keychain::Receive, index)?;
        let public = secp256k1::PublicKey::from_secret_key(&self.secp, &key.0.private_key);
        address_of(chain, self.network, &public)
    }

    fn xpub(&self, chain: Chain) -> Result<Xpub, SignerError> {
        let path: Vec<ChildNumber> = account_path(chain, self.network).into();
        let account = self.derive(&path)?;
        Ok(Xpub {
            chain,
            network: self.network,
            key: BitcoinXpub::from_priv(&self.secp, &account.0),
        })
    }

    fn sign_digest_on(
        &self,
        chain: Chain,
        keychain: Keychain,
        index: u32,
        digest: [u8; 32],
    ) -> Result<RecoverableSignature, SignerError> {
        let key = self.key(chain, keychain, index)?;
        Ok(sign_with(&self.secp, &key, digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The public key a 65-byte recoverable signature over `digest` recovers to.
    fn signed_by(signature: &RecoverableSignature, digest: [u8; 32]) -> secp256k1::PublicKey {
        let id = secp256k1::ecdsa::RecoveryId::from_i32(i32::from(signature.0[64])).unwrap();
        let recoverable =
            secp256k1::ecdsa::RecoverableSignature::from_compact(&signature.0[..64], id).unwrap();
        Secp256k1::new()
            .recover_ecdsa(&Message::from_digest(digest), &recoverable)
            .unwrap()
    }

    /// The mnemonic of anvil and hardhat's default accounts.
    const TEST_JUNK: &str = "test test test test test test test test test test test junk";
    /// BIP-84's own test vector mnemonic.
    const ABANDON: &str = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

    #[test]
    fn published_vectors() {
        let junk = InProcessSigner::new(&Mnemonic::parse(TEST_JUNK).unwrap(), Network::Mainnet);
        // anvil's first two accounts.
        assert_eq!(
            junk.address(Chain::Ethereum, 0).unwrap().as_str(),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        );
        assert_eq!(
            junk.address(Chain::Ethereum, 1).unwrap().as_str(),
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
        );
        // BIP-84: m/84'/0'/0'/0/0 and the account xpub.
        let abandon = InProcessSigner::new(&Mnemonic::parse(ABANDON).unwrap(), Network::Mainnet);
        assert_eq!(
            abandon.address(Chain::Bitcoin, 0).unwrap().as_str(),
            "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"
        );
        assert_eq!(
            abandon.address(Chain::Bitcoin, 1).unwrap().as_str(),
            "bc1qnjg0jd8228aq7egyzacy8cys3knf9xvrerkf9g"
        );
    }

    #[test]
    fn tron_and_ethereum_share_the_account_bytes_only_through_the_path() {
        let signer = InProcessSigner::new(&Mnemonic::parse(TEST_JUNK).unwrap(), Network::Mainnet);
        let tron = signer.address(Chain::Tron, 0).unwrap();
        let ethereum = signer.address(Chain::Ethereum, 0).unwrap();
        assert!(tron.as_str().starts_with('T'));
        // Different coin types (195' and 60'), so different keys.
        assert_ne!(
            &tron.tron_bytes().unwrap()[1..],
            &ethereum.ethereum_bytes().unwrap()[..]
        );
    }

    #[test]
    fn the_deposit_account_is_its_own_and_only_its_xpub_is_taken() {
        let mnemonic = Mnemonic::parse(
            "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
        )
        .unwrap();
        for network in [Network::Mainnet, Network::Regtest] {
            let signer = InProcessSigner::new(&mnemonic, network);
            for chain in [Chain::Tron, Chain::Ethereum, Chain::Bitcoin] {
                let deposit = signer.deposit_xpub(chain).unwrap().to_string();
                let parsed = Xpub::parse_deposit(chain, network, &deposit).unwrap();
                let hot = signer.address(chain, 0).unwrap();
                for index in 0..5 {
                    assert_ne!(parsed.address(index).unwrap(), hot, "{chain} {index}");
                }
                // The same keys as the path says, derived from the seed.
                let mut path: Vec<ChildNumber> = deposit_account_path(chain, network).into();
                path.extend(key_path(Keychain::Receive, 3).unwrap());
                let key = signer.derive(&path).unwrap();
                let public =
                    secp256k1::PublicKey::from_secret_key(&signer.secp, &key.0.private_key);
                assert_eq!(
                    parsed.address(3).unwrap(),
                    address_of(chain, network, &public).unwrap()
                );
                // Account 0's xpub (the hot wallet's) is refused as a deposit xpub.
                let working = signer.xpub(chain).unwrap().to_string();
                let refused = Xpub::parse_deposit(chain, network, &working).unwrap_err();
                assert!(refused.to_string().contains("--deposit"), "{refused}");
            }
        }
    }

    #[test]
    fn the_deposit_signer_signs_as_the_deposit_addresses_and_never_as_account_zero() {
        let signer = std::sync::Arc::new(InProcessSigner::new(
            &Mnemonic::parse(TEST_JUNK).unwrap(),
            Network::Mainnet,
        ));
        let deposits = DepositSigner::new(signer.clone());
        let xpub = signer.deposit_xpub(Chain::Ethereum).unwrap();
        let digest = *alloy_primitives::keccak256(b"sweep");
        // Interleaved with account 0's signatures, so the cache keeps the accounts apart.
        for index in [0, 5, 0, 2] {
            let expected = xpub.address(index).unwrap();
            assert_eq!(deposits.address(Chain::Ethereum, index).unwrap(), expected);
            assert_ne!(signer.address(Chain::Ethereum, index).unwrap(), expected);
            let signature = deposits
                .sign_digest(Chain::Ethereum, index, digest)
                .unwrap();
            let public = signed_by(&signature, digest);
            assert_eq!(
                address_of(Chain::Ethereum, Network::Mainnet, &public).unwrap(),
                expected
            );
            let hot = signer.sign_digest(Chain::Ethereum, index, digest).unwrap();
            assert_ne!(hot, signature);
        }
    }

    /// A Bitcoin payout spending a deposit signs its input with `Keychain::Deposit`: the
    /// deposit address's own key (account 1'/0/i), by the hot signer and the deposit signer
    /// alike, and never account 0's key of the same index. Only the deposit account's xpub
    /// derives it; account 0's refuses.
    #[test]
    fn a_deposit_key_is_the_deposit_addresses_whoever_signs_and_only_their_xpub_derives_it() {
        let signer = std::sync::Arc::new(InProcessSigner::new(
            &Mnemonic::parse(ABANDON).unwrap(),
            Network::Regtest,
        ));
        let deposits = DepositSigner::new(signer.clone());
        let exported = signer.deposit_xpub(Chain::Bitcoin).unwrap().to_string();
        let xpub = Xpub::parse_deposit(Chain::Bitcoin, Network::Regtest, &exported).unwrap();
        let hot_xpub = signer.xpub(Chain::Bitcoin).unwrap();
        assert!(xpub.is_deposit_account() && !hot_xpub.is_deposit_account());
        let digest = [7u8; 32];
        for index in [3, 0, 3] {
            let key = xpub.public_key(Keychain::Deposit, index).unwrap();
            assert_eq!(key, xpub.public_key(Keychain::Receive, index).unwrap());
            assert_eq!(
                address_of(Chain::Bitcoin, Network::Regtest, &key).unwrap(),
                xpub.address(index).unwrap()
            );
            assert_ne!(key, hot_xpub.public_key(Keychain::Receive, index).unwrap());
            for signature in [
                signer.sign_digest_on(Chain::Bitcoin, Keychain::Deposit, index, digest),
                deposits.sign_digest_on(Chain::Bitcoin, Keychain::Deposit, index, digest),
            ] {
                let signature = signature.unwrap();
                let public = signed_by(&signature, digest);
                assert_eq!(public, key, "key {index}");
            }
        }
        let refused = hot_xpub.public_key(Keychain::Deposit, 0).unwrap_err();
        assert!(refused.to_string().contains("deposit account"), "{refused}");
    }

    #[test]
    fn xpub_alone_derives_the_same_addresses() {
        for network in [Network::Mainnet, Network::Regtest] {
            let signer = InProcessSigner::new(&Mnemonic::generate(), network);
            for chain in Chain::ALL {
                let exported = signer.xpub(chain).unwrap().to_string();
                let xpub = Xpub::parse(chain, network, &exported).unwrap();
                for index in [0, 1, 7, 1_000_000] {
                    assert_eq!(
                        xpub.address(index).unwrap(),
                        signer.address(chain, index).unwrap(),
                        "{chain} {index} on {network}"
                    );
                }
            }
        }
    }

    #[test]
    fn signatures_recover_to_the_signing_address() {
        let signer = InProcessSigner::new(&Mnemonic::parse(TEST_JUNK).unwrap(), Network::Mainnet);
        let digest = *alloy_primitives::keccak256(b"coinsensei");
        let signature = signer.sign_digest(Chain::Ethereum, 3, digest).unwrap();
        let public = signed_by(&signature, digest);
        let recovered = address_of(Chain::Ethereum, Network::Mainnet, &public).unwrap();
        assert_eq!(recovered, signer.address(Chain::Ethereum, 3).unwrap());
    }

    #[test]
    fn signatures_with_cached_keychains_come_from_the_key_the_xpub_names() {
        let signer = InProcessSigner::new(&Mnemonic::parse(TEST_JUNK).unwrap(), Network::Testnet);
        let digest = *alloy_primitives::keccak256(b"cached");
        // Interleaved chains, keychains and indexes: each signature from its own key, as the
        // account xpub (derived from the seed, without the cache) says.
        for (chain, keychain, index) in [
            (Chain::Tron, Keychain::Receive, 0),
            (Chain::Bitcoin, Keychain::Change, 2),
            (Chain::Tron, Keychain::Receive, 7),
            (Chain::Bitcoin, Keychain::Receive, 2),
            (Chain::Ethereum, Keychain::Receive, 3),
            (Chain::Bitcoin, Keychain::Change, 2),
            (Chain::Tron, Keychain::Receive, 0),
        ] {
            let signature = signer
                .sign_digest_on(chain, keychain, index, digest)
                .unwrap();
            let public = signed_by(&signature, digest);
            assert_eq!(
                address_of(chain, Network::Testnet, &public).unwrap(),
                signer
                    .xpub(chain)
                    .unwrap()
                    .address_on(keychain, index)
                    .unwrap(),
                "{chain} {keychain:?} {index}"
            );
        }
    }

    #[test]
    fn bad_mnemonics_and_indexes_are_refused_without_echoing_words() {
        let error = Mnemonic::parse("test test test test test test test test test test test test")
            .unwrap_err();
        assert!(!error.to_string().contains("test test"), "{error}");
        assert!(Mnemonic::parse("not a mnemonic at all").is_err());
        let signer = InProcessSigner::new(&Mnemonic::generate(), Network::Mainnet);
        assert!(matches!(
            signer.address(Chain::Tron, 1 << 31),
            Err(SignerError::Index(_))
        ));
        let mnemonic = Mnemonic::generate();
        let phrase = mnemonic.phrase();
        assert_eq!(mnemonic.word_count(), 24);
        let first_two: Vec<&str> = phrase.split(' ').take(2).collect();
        assert!(!format!("{mnemonic:?} {signer:?}").contains(&first_two.join(" ")));
        // Mixed case and extra spaces read the same.
        let shouted = phrase.to_uppercase().replace(' ', "   ");
        let again = Mnemonic::parse(&shouted).unwrap();
        assert_eq!(
            InProcessSigner::new(&again, Network::Mainnet)
                .address(Chain::Ethereum, 0)
                .unwrap(),
            signer_for(&mnemonic).address(Chain::Ethereum, 0).unwrap()
        );
    }

    fn signer_for(mnemonic: &Mnemonic) -> InProcessSigner {
        InProcessSigner::new(mnemonic, Network::Mainnet)
    }
}
