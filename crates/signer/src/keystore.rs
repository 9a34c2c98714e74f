//! The keystore file: the mnemonic encrypted under a password.
//!
//! JSON with the format's version, the KDF and its parameters, a random salt and nonce, and
//! the ciphertext. The key is scrypt(password, salt) (N = 2^17, r = 8, p = 1 by default:
//! about 128 MiB and a fraction of a second, per attempt); the cipher is XChaCha20-Poly1305
//! (a 192-bit random nonce, so no nonce is ever reused), with the header as associated data,
//! so a file whose parameters were edited does not decrypt. A wrong password and a damaged
//! file give the same error: the AEAD cannot tell them apart.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::Mnemonic;

const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    #[error("wrong password, or the keystore file is damaged")]
    Decrypt,
    #[error("the keystore file is not valid: {0}")]
    Format(String),
    // `error`, not `source`: the cause is in the message, and `{:#}` would print a source
    // a second time.
    #[error("keystore {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("the password is empty")]
    EmptyPassword,
}

/// scrypt's cost: 2^log_n iterations over r × 128 bytes, p lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub log_n: u8,
    pub r: u32,
    pub p: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            log_n: 17,
            r: 8,
            p: 1,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    version: u32,
    kdf: String,
    kdf_params: KdfParams,
    cipher: String,
    salt: String,
    nonce: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(flatten)]
    header: Header,
    ciphertext: String,
}

fn hex(bytes: &[u8]) -> String {
    alloy_primitives::hex::encode(bytes)
}

fn unhex(text: &str) -> Result<Vec<u8>, KeystoreError> {
    alloy_primitives::hex::decode(text).map_err(|error| KeystoreError::Format(error.to_string()))
}

fn key(
    password: &[u8],
    salt: &[u8],
    params: KdfParams,
) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
    if !(10..=22).contains(&params.log_n)
        || params.r == 0
        || params.r > 32
        || params.p == 0
        || params.p > 16
    {
        return Err(KeystoreError::Format(format!(
            "scrypt parameters out of range: {params:?}"
        )));
    }
    let scrypt_params = scrypt::Params::new(params.log_n, params.r, params.p, 32)
        .map_err(|error| KeystoreError::Format(error.to_string()))?;
    let mut key = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(password, salt, &scrypt_params, &mut key[..])
        .map_err(|error| KeystoreError::Format(error.to_string()))?;
    Ok(key)
}

/// Encrypts `mnemonic` under `password` into the keystore's JSON text.
pub fn seal(
    mnemonic: &Mnemonic,
    password: &[u8],
    params: KdfParams,
) -> Result<String, KeystoreError> {
    if password.is_empty() {
        return Err(KeystoreError::EmptyPassword);
    }
    let salt: [u8; 32] = rand::random();
    let nonce: [u8; 24] = rand::random();
    let header = Header {
        version: VERSION,
        kdf: "scrypt".into(),
        kdf_params: params,
        cipher: "xchacha20poly1305".into(),
        salt: hex(&salt),
        nonce: hex(&nonce),
    };
    let aad =
        serde_json::to_vec(&header).map_err(|error| KeystoreError::Format(error.to_string()))?;
    let key = key(password, &salt, params)?;
    let cipher = XChaCha20Poly1305::new((&*key).into());
    let phrase = mnemonic.phrase();
    let ciphertext = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: phrase.as_bytes(),
                aad: &aad,
            },
        )
        .map_err(|_| KeystoreError::Format("encryption failed".into()))?;
    let file = File {
        header,
        ciphertext: hex(&ciphertext),
    };
    serde_json::to_string_pretty(&file).map_err(|error| KeystoreError::Format(error.to_string()))
}

/// Decrypts a keystore's JSON text.
pub fn open(text: &str, password: &[u8]) -> Result<Mnemonic, KeystoreError> {
    let file: File =
        serde_json::from_str(text).map_err(|error| KeystoreError::Format(error.to_string()))?;
    let header = &file.header;
    if header.version != VERSION || header.kdf != "scrypt" || header.cipher != "xchacha20poly1305" {
        return Err(KeystoreError::Format(format!(
            "unsupported keystore (version {}, {}, {})",
            header.version, header.kdf, header.cipher
        )));
    }
    let salt = unhex(&header.salt)?;
    let nonce: [u8; 24] = unhex(&header.nonce)?
        .try_into()
        .map_err(|_| KeystoreError::Format("the nonce is not 24 bytes".into()))?;
    if salt.len() < 16 {
        return Err(KeystoreError::Format(
            "the salt is shorter than 16 bytes".into(),
        ));
    }
    let aad =
        serde_json::to_vec(header).map_err(|error| KeystoreError::Format(error.to_string()))?;
    let key = key(password, &salt, header.kdf_params)?;
    let cipher = XChaCha20Poly1305::new((&*key).into());
    let phrase = Zeroizing::new(
        cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &unhex(&file.ciphertext)?,
                    aad: &aad,
                },
            )
            .map_err(|_| KeystoreError::Decrypt)?,
    );
    let phrase = std::str::from_utf8(&phrase).map_err(|_| KeystoreError::Decrypt)?;
    Mnemonic::parse(phrase).map_err(|_| KeystoreError::Decrypt)
}

/// Writes a new keystore file; refuses to overwrite one (a lost mnemonic is lost money).
pub fn create(
    path: &Path,
    mnemonic: &Mnemonic,
    password: &[u8],
    params: KdfParams,
) -> Result<(), KeystoreError> {
    use std::io::Write;
    let text = seal(mnemonic, password, params)?;
    let io = |error| KeystoreError::Io {
        path: path.display().to_string(),
        error,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Reads and decrypts a keystore file.
pub fn load(path: &Path, password: &[u8]) -> Result<Mnemonic, KeystoreError> {
    let text = std::fs::read_to_string(path).map_err(|error| KeystoreError::Io {
        path: path.display().to_string(),
        error,
    })?;
    open(&text, password)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        log_n: 10,
        r: 8,
        p: 1,
    };

    #[test]
    fn seals_and_opens_and_hides_the_words() {
        let mnemonic = Mnemonic::generate();
        let phrase = mnemonic.phrase();
        let text = seal(&mnemonic, b"correct horse", FAST).unwrap();
        // No two neighbouring words in clear, and every value is either a fixed name or hex.
        // (A single word can turn up by chance: the field `salt` is a BIP39 word, and so is
        // `add`, which a hex string may start with.)
        let words: Vec<&str> = phrase.split(' ').collect();
        for pair in words.windows(2) {
            assert!(!text.contains(&pair.join(" ")), "no words in clear");
        }
        let file: serde_json::Value = serde_json::from_str(&text).unwrap();
        for (field, value) in file.as_object().unwrap() {
            match (field.as_str(), value) {
                ("version" | "kdf_params", _) => {}
                ("kdf", value) => assert_eq!(value, "scrypt"),
                ("cipher", value) => assert_eq!(value, "xchacha20poly1305"),
                ("salt" | "nonce" | "ciphertext", serde_json::Value::String(value)) => {
                    assert!(
                        value.bytes().all(|b| b.is_ascii_hexdigit()),
                        "{field} is hex"
                    )
                }
                other => panic!("unexpected field {other:?}"),
            }
        }
        let opened = open(&text, b"correct horse").unwrap();
        assert_eq!(*opened.phrase(), *phrase);
        assert!(matches!(
            open(&text, b"wrong horse"),
            Err(KeystoreError::Decrypt)
        ));
        // Sealing twice gives different files (fresh salt and nonce).
        assert_ne!(seal(&mnemonic, b"correct horse", FAST).unwrap(), text);
    }

    #[test]
    fn edited_files_do_not_open() {
        let mnemonic = Mnemonic::generate();
        let text = seal(&mnemonic, b"pw", FAST).unwrap();
        let mut file: serde_json::Value = serde_json::from_str(&text).unwrap();
        // Weaker KDF parameters written in: the header is authenticated, so it fails.
        file["kdf_params"]["r"] = serde_json::json!(1);
        assert!(matches!(
            open(&file.to_string(), b"pw"),
            Err(KeystoreError::Decrypt)
        ));
        let mut file: serde_json::Value = serde_json::from_str(&text).unwrap();
        let ciphertext = file["ciphertext"].as_str().unwrap().to_string();
        let flipped = format!(
            "{}{}",
            if &ciphertext[..1] == "0" { "1" } else { "0" },
            &ciphertext[1..]
        );
        file["ciphertext"] = serde_json::json!(flipped);
        assert!(matches!(
            open(&file.to_string(), b"pw"),
            Err(KeystoreError::Decrypt)
        ));
        assert!(matches!(open("{}", b"pw"), Err(KeystoreError::Format(_))));
        assert!(matches!(
            seal(&mnemonic, b"", FAST),
            Err(KeystoreError::EmptyPassword)
        ));
    }

    #[test]
    fn files_are_private_and_never_overwritten() {
        let dir = std::env::temp_dir().join(format!("coinsensei-keystore-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keystore.json");
        let _ = std::fs::remove_file(&path);
        let mnemonic = Mnemonic::generate();
        create(&path, &mnemonic, b"pw", FAST).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            create(&path, &Mnemonic::generate(), b"pw", FAST),
            Err(KeystoreError::Io { .. })
        ));
        assert_eq!(*load(&path, b"pw").unwrap().phrase(), *mnemonic.phrase());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
