//! `coinsensei keys init|import|address|xpub [--deposit]`: the HD keystore. The mnemonic is shown once
//! (by `init`) and otherwise only ever exists encrypted in the keystore file; these commands
//! print addresses and extended public keys, never a secret.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use chain::address::Network;
use domain::Chain;
use signer::keystore::{self, KdfParams};
use signer::{InProcessSigner, Mnemonic, Signer};
use zeroize::Zeroizing;

/// Where the keystore is and how to open it.
pub struct KeystoreArgs {
    pub keystore: Option<PathBuf>,
    pub password_file: Option<PathBuf>,
    pub network: Network,
}

impl KeystoreArgs {
    fn path(&self) -> anyhow::Result<&Path> {
        self.keystore
            .as_deref()
            .context("no keystore: pass --keystore FILE or set COINSENSEI_KEYSTORE")
    }

    fn password(&self) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        let path = self.password_file.as_deref().context(
            "no password: set COINSENSEI_KEYSTORE_PASSWORD_FILE to a file holding the keystore's password",
        )?;
        let mut bytes = Zeroizing::new(
            std::fs::read(path)
                .with_context(|| format!("reading the password file {}", path.display()))?,
        );
        // A trailing newline is the editor's, not the password's.
        while bytes
            .last()
            .is_some_and(|byte| *byte == b'\n' || *byte == b'\r')
        {
            bytes.pop();
        }
        if bytes.is_empty() {
            bail!("the password file {} is empty", path.display());
        }
        Ok(bytes)
    }

    pub fn signer(&self) -> anyhow::Result<InProcessSigner> {
        let path = self.path()?;
        let mnemonic = keystore::load(path, &self.password()?)?;
        Ok(InProcessSigner::new(&mnemonic, self.network))
    }
}

fn write(args: &KeystoreArgs, mnemonic: &Mnemonic) -> anyhow::Result<()> {
    let path = args.path()?;
    if path.exists() {
        bail!(
            "{} exists already; a keystore is never overwritten (move it away first if you mean to replace it)",
            path.display()
        );
    }
    let password = args.password()?;
    keystore::create(path, mnemonic, &password, KdfParams::default())?;
    Ok(())
}

pub fn init(args: &KeystoreArgs) -> anyhow::Result<ExitCode> {
    // Check what can fail before a mnemonic exists, so none is shown and then lost.
    args.path()?;
    args.password()?;
    let mnemonic = Mnemonic::generate();
    write(args, &mnemonic)?;
    eprintln!(
        "keystore written to {}. The {} words below are the only copy outside it: write them on paper, keep them offline; they are not shown again.",
        args.path()?.display(),
        mnemonic.word_count()
    );
    println!("{}", *mnemonic.phrase());
    Ok(ExitCode::SUCCESS)
}

pub fn import(args: &KeystoreArgs, mnemonic_file: &Path) -> anyhow::Result<ExitCode> {
    let text = Zeroizing::new(
        std::fs::read_to_string(mnemonic_file)
            .with_context(|| format!("reading {}", mnemonic_file.display()))?,
    );
    let mnemonic = Mnemonic::parse(&text)?;
    write(args, &mnemonic)?;
    eprintln!(
        "keystore written to {} from a {}-word mnemonic; delete {} once it is stored offline",
        args.path()?.display(),
        mnemonic.word_count(),
        mnemonic_file.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn address(args: &KeystoreArgs, chain: Chain, index: u32) -> anyhow::Result<ExitCode> {
    let address = args.signer()?.address(chain, index)?;
    println!("{address}");
    Ok(ExitCode::SUCCESS)
}

pub fn xpub(args: &KeystoreArgs, chain: Chain, deposit: bool) -> anyhow::Result<ExitCode> {
    let signer = args.signer()?;
    if deposit {
        let xpub = signer.deposit_xpub(chain)?;
        eprintln!(
            "the deposit account key of {chain} ({}): set it as {chain}_deposit_xpub of the control plane; it derives every deposit address, and no secret",
            signer::deposit_account_path(chain, args.network)
        );
        println!("{xpub}");
        return Ok(ExitCode::SUCCESS);
    }
    let xpub = signer.xpub(chain)?;
    eprintln!(
        "the account key of {chain} ({}): the hot wallet's account, public keys only",
        signer::account_path(chain, args.network)
    );
    println!("{xpub}");
    Ok(ExitCode::SUCCESS)
}
