//! `coinsensei keys`: the mnemonic is shown once and otherwise only exists encrypted; the
//! addresses are the published ones; nothing a command logs or says carries key material.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};

use common::*;

async fn keys(keystore: &Path, password_file: &Path, args: &[&str]) -> Output {
    let mut command = coinsensei(["keys"].iter().chain(args));
    command
        .env("COINSENSEI_KEYSTORE", keystore)
        .env("COINSENSEI_KEYSTORE_PASSWORD_FILE", password_file)
        .env("COINSENSEI_LOG", "trace")
        .stdin(Stdio::null());
    command.output().await.expect("run coinsensei keys")
}

fn out(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// No two consecutive words of `phrase` appear in `text`.
fn assert_no_words(text: &str, phrase: &str) {
    let words: Vec<&str> = phrase.split(' ').collect();
    for pair in words.windows(2) {
        assert!(
            !text.contains(&pair.join(" ")),
            "key material leaked: {text}"
        );
    }
}

#[tokio::test]
async fn keystore_lifecycle_and_no_secret_in_any_output() {
    let dir = tempdir();
    let keystore = dir.join("keystore.json");
    let password = dir.join("password");
    std::fs::write(&password, "correct horse battery staple\n").unwrap();

    // No password file: refused before any mnemonic exists.
    let missing = keys(&keystore, &dir.join("nope"), &["init"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        out(&missing).is_empty(),
        "no mnemonic shown when it cannot be kept"
    );
    assert!(!keystore.exists());

    let init = keys(&keystore, &password, &["init"]).await;
    assert!(init.status.success(), "{}", stderr(&init));
    let phrase = out(&init);
    assert_eq!(phrase.split(' ').count(), 24, "{phrase}");
    assert!(stderr(&init).contains("not shown again"));
    assert_no_words(&stderr(&init), &phrase);
    assert_no_words(&std::fs::read_to_string(&keystore).unwrap(), &phrase);
    let again = keys(&keystore, &password, &["init"]).await;
    assert!(
        stderr(&again).contains("exists already"),
        "{}",
        stderr(&again)
    );

    let address = keys(
        &keystore,
        &password,
        &["address", "--chain", "ethereum", "--index", "0"],
    )
    .await;
    assert!(address.status.success(), "{}", stderr(&address));
    let ethereum = out(&address);
    assert!(
        ethereum.starts_with("0x") && ethereum.len() == 42,
        "{ethereum}"
    );

    // The printed words, imported elsewhere, give the same keys.
    let words = dir.join("words");
    std::fs::write(&words, &phrase).unwrap();
    let copy = dir.join("copy.json");
    let import = keys(
        &copy,
        &password,
        &["import", "--mnemonic-file", words.to_str().unwrap()],
    )
    .await;
    assert!(import.status.success(), "{}", stderr(&import));
    let same = keys(
        &copy,
        &password,
        &["address", "--chain", "ethereum", "--index", "0"],
    )
    .await;
    assert_eq!(out(&same), ethereum);

    // A wrong password opens nothing and says so.
    let wrong = dir.join("wrong");
    std::fs::write(&wrong, "tr0ub4dor").unwrap();
    let refused = keys(
        &keystore,
        &wrong,
        &["address", "--chain", "tron", "--index", "0"],
    )
    .await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("wrong password"),
        "{}",
        stderr(&refused)
    );

    let xpub = keys(&keystore, &password, &["xpub", "--chain", "bitcoin"]).await;
    assert!(out(&xpub).starts_with("xpub"), "{}", out(&xpub));
    let tpub = keys(
        &keystore,
        &password,
        &["xpub", "--chain", "bitcoin", "--network", "regtest"],
    )
    .await;
    assert!(out(&tpub).starts_with("tpub"), "{}", out(&tpub));

    for output in [
        &missing, &again, &address, &import, &same, &refused, &xpub, &tpub,
    ] {
        assert_no_words(&out(output), &phrase);
        assert_no_words(&stderr(output), &phrase);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn imported_test_mnemonic_gives_the_published_addresses() {
    let dir = tempdir();
    let password = dir.join("password");
    std::fs::write(&password, "pw").unwrap();
    let words = dir.join("words");
    std::fs::write(
        &words,
        "test test test test test test test test test test test junk\n",
    )
    .unwrap();
    let keystore = dir.join("keystore.json");
    let import = keys(
        &keystore,
        &password,
        &["import", "--mnemonic-file", words.to_str().unwrap()],
    )
    .await;
    assert!(import.status.success(), "{}", stderr(&import));
    let address = |chain: &'static str, index: &'static str, network: &'static str| {
        let keystore = keystore.clone();
        let password = password.clone();
        async move {
            out(&keys(
                &keystore,
                &password,
                &[
                    "address",
                    "--chain",
                    chain,
                    "--index",
                    index,
                    "--network",
                    network,
                ],
            )
            .await)
        }
    };
    // anvil's default accounts.
    assert_eq!(
        address("ethereum", "0", "mainnet").await,
        "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    );
    assert_eq!(
        address("ethereum", "2", "mainnet").await,
        "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
    );
    assert!(address("tron", "0", "mainnet").await.starts_with('T'));
    assert!(
        address("bitcoin", "0", "regtest")
            .await
            .starts_with("bcrt1q")
    );
    let bad = keys(
        &keystore,
        &password,
        &["address", "--chain", "ethereum", "--index", "2147483648"],
    )
    .await;
    assert_eq!(
        bad.status.code(),
        Some(2),
        "clap refuses an index past 2^31 - 1"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "coinsensei-keys-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
