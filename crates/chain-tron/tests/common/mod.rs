//! What the chain-tron tests share: a signer over one raw private key, so vectors can use the
//! keys independent implementations are given (0x00…01 in the vectors).

#![allow(dead_code, reason = "each test binary uses its own part")]

use chain::address::Address;
use domain::Chain;
use secp256k1::{Message, SecretKey};
use signer::{RecoverableSignature, Signer, SignerError, Xpub};

/// Signs with one key whatever the index.
pub struct KeySigner(pub SecretKey);

impl KeySigner {
    pub fn from_hex(text: &str) -> KeySigner {
        KeySigner(SecretKey::from_slice(&hex::decode(text).unwrap()).unwrap())
    }

    pub fn tron_address(&self) -> Address {
        let public = self.0.public_key(secp256k1::SECP256K1);
        let hash = alloy_primitives::keccak256(&public.serialize_uncompressed()[1..]);
        let mut bytes = [0x41u8; 21];
        bytes[1..].copy_from_slice(&hash[12..]);
        chain_tron::transaction::address(&bytes).unwrap()
    }
}

impl Signer for KeySigner {
    fn address(&self, chain: Chain, _index: u32) -> Result<Address, SignerError> {
        assert_eq!(chain, Chain::Tron);
        Ok(self.tron_address())
    }

    fn xpub(&self, _chain: Chain) -> Result<Xpub, SignerError> {
        Err(SignerError::Xpub(
            "a single raw key has no extended key".into(),
        ))
    }

    fn sign_digest_on(
        &self,
        _chain: Chain,
        _keychain: signer::Keychain,
        _index: u32,
        digest: [u8; 32],
    ) -> Result<RecoverableSignature, SignerError> {
        let signature =
            secp256k1::SECP256K1.sign_ecdsa_recoverable(&Message::from_digest(digest), &self.0);
        let (id, compact) = signature.serialize_compact();
        let mut bytes = [0u8; 65];
        bytes[..64].copy_from_slice(&compact);
        bytes[64] = u8::try_from(id.to_i32()).unwrap();
        Ok(RecoverableSignature(bytes))
    }
}

pub mod fake;
