//! API tokens: 256 random bits shown once as `cst_` and 64 hex digits, stored only as their
//! SHA-256. A fast hash is enough: nobody can guess 256 random bits, slowly or quickly.

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

/// The stored form of a token.
pub fn hash_token(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
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
}
