//! The chains' nodes as the control plane reaches them: one client per configured chain,
//! built from the same configuration the workers use (`config.rs`; `payers.rs` builds the
//! workers' own), connected on first use and again after a failure. The health checker asks
//! them through [`web::health::NodeProbe`], which keeps the chain SDKs out of the web crate;
//! a later control-plane feature that must ask a chain (a manual review checking a txid)
//! takes its client from here too.
//!
//! Nothing here holds a key: reads only.

use std::sync::Arc;

use anyhow::Context;
use chain::provider::ChainRead;
use chain_ethereum::Ethereum;
use chain_tron::Tron;
use chrono::{DateTime, Utc};
use domain::Chain;
use web::health::{NodeProbe, NodeStatus, ProbeFuture};

use crate::config::Settings;

/// The configured chains' clients.
pub struct ChainClients {
    settings: Settings,
    /// Connected on first use (connecting asks the node its chain id, so it needs the node
    /// up); None until then, and again after a connection attempt failed.
    ethereum: tokio::sync::Mutex<Option<Ethereum>>,
    /// Made once: building it asks the node nothing.
    tron: Option<Result<Tron, String>>,
}

impl std::fmt::Debug for ChainClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainClients")
            .field("chains", &self.configured())
            .finish_non_exhaustive()
    }
}

fn at_unix(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

impl ChainClients {
    pub fn new(settings: &Settings) -> ChainClients {
        let tron = settings.tron.rpc_url.as_ref().map(|_| {
            settings
                .tron
                .node()
                .and_then(|config| Ok(Tron::new(config)?))
                .map_err(|error| format!("{error:#}"))
        });
        ChainClients {
            settings: settings.clone(),
            ethereum: tokio::sync::Mutex::new(None),
            tron,
        }
    }

    /// The chains whose node is configured.
    pub fn configured(&self) -> Vec<Chain> {
        let mut chains = Vec::new();
        if self.tron.is_some() {
            chains.push(Chain::Tron);
        }
        if self.settings.ethereum.is_some() {
            chains.push(Chain::Ethereum);
        }
        if self.settings.bitcoin.is_some() {
            chains.push(Chain::Bitcoin);
        }
        chains
    }

    /// The Ethereum node's client, connected. Not checked against `ethereum_chain_id`: the
    /// health check compares the chain id itself, at every probe, to say what it found; a
    /// caller that acts on the chain's answers checks [`Ethereum::node_head`]'s chain id too.
    pub async fn ethereum_unchecked(&self) -> anyhow::Result<Ethereum> {
        let node = self.settings.ethereum.as_ref().context(
            "no Ethereum node configured: set ethereum_rpc_url (COINSENSEI_ETHEREUM_RPC_URL)",
        )?;
        let mut client = self.ethereum.lock().await;
        if let Some(client) = client.as_ref() {
            return Ok(client.clone());
        }
        let connected = Ethereum::connect(&node.rpc_url, None).await?;
        *client = Some(connected.clone());
        Ok(connected)
    }

    /// The TRON node's client.
    pub fn tron(&self) -> anyhow::Result<Tron> {
        match &self.tron {
            None => {
                anyhow::bail!("no TRON node configured: set tron_rpc_url (COINSENSEI_TRON_RPC_URL)")
            }
            Some(Ok(tron)) => Ok(tron.clone()),
            Some(Err(error)) => anyhow::bail!("{error}"),
        }
    }

    /// A client of the Bitcoin node, made anew (a cookie file is read again: the node
    /// rewrites it at each start). `attempts`: calls per read at most.
    pub fn bitcoin(&self, attempts: u32) -> anyhow::Result<chain_bitcoin::Rpc> {
        let rpc = crate::commands::chain::bitcoin_rpc(&self.settings)?;
        rpc.with_attempts(attempts)
            .map_err(|error| anyhow::anyhow!(error))
    }

    async fn probe_ethereum(&self) -> anyhow::Result<NodeStatus> {
        let client = self.ethereum_unchecked().await?;
        let head = match client.node_head().await {
            Ok(head) => head,
            Err(error) => {
                // The next probe connects afresh (the node may have moved or come back).
                *self.ethereum.lock().await = None;
                return Err(error.into());
            }
        };
        Ok(NodeStatus {
            network: format!("chain id {}", head.chain_id),
            expected_network: self
                .settings
                .ethereum
                .as_ref()
                .and_then(|node| node.chain_id)
                .map(|id| format!("chain id {id}")),
            network_key: "ethereum_chain_id",
            tip_height: head.number,
            tip_time: at_unix(i64::try_from(head.timestamp).unwrap_or(i64::MAX)),
            catching_up: None,
        })
    }

    async fn probe_tron(&self) -> anyhow::Result<NodeStatus> {
        let tron = self.tron()?;
        let head = tron.head().await?;
        // The network is known by its first block: each network has its own genesis.
        let genesis = ChainRead::block(&tron, 0)
            .await?
            .context("the TRON node serves no block 0")?;
        Ok(NodeStatus {
            network: format!("genesis {}", genesis.hash.to_ascii_lowercase()),
            expected_network: self
                .settings
                .tron
                .genesis_block_id
                .as_ref()
                .map(|id| format!("genesis {id}")),
            network_key: "tron_genesis_block_id",
            tip_height: head.reference.number,
            tip_time: DateTime::from_timestamp_millis(head.timestamp)
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
            catching_up: None,
        })
    }

    async fn probe_bitcoin(&self) -> anyhow::Result<NodeStatus> {
        // One call per read: a probe reports what the node answered, not a retry's timeout.
        let rpc = self.bitcoin(1)?;
        let status = chain_bitcoin::node_status(&rpc).await?;
        let header = rpc
            .call("getblockheader", serde_json::json!([status.best_hash]))
            .await
            .map_err(|error| anyhow::anyhow!("getblockheader: {error}"))?;
        let time = header["time"].as_i64().context("getblockheader: no time")?;
        Ok(NodeStatus {
            network: status.chain.clone(),
            expected_network: Some(
                chain_bitcoin::NodeStatus::chain_name(self.settings.withdrawals.bitcoin_network)
                    .to_string(),
            ),
            network_key: "bitcoin_network",
            tip_height: status.blocks,
            tip_time: at_unix(time),
            catching_up: Some((
                status.headers.saturating_sub(status.blocks),
                status.initial_block_download,
            )),
        })
    }
}

impl NodeProbe for ChainClients {
    fn chains(&self) -> Vec<Chain> {
        self.configured()
    }

    fn probe(&self, chain: Chain) -> ProbeFuture<'_> {
        Box::pin(async move {
            let outcome = match chain {
                Chain::Ethereum => self.probe_ethereum().await,
                Chain::Tron => self.probe_tron().await,
                Chain::Bitcoin => self.probe_bitcoin().await,
            };
            // The clients' errors name an endpoint by its origin only, never its path,
            // query or credentials.
            outcome.map_err(|error| format!("{error:#}"))
        })
    }
}

/// The clients, shared by the health checker and whatever else asks the chains.
pub fn clients(settings: &Settings) -> Arc<ChainClients> {
    Arc::new(ChainClients::new(settings))
}
