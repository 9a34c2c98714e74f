//! Chains and the assets the exchange moves on them, with their decimals and token contracts.
//!
//! The catalogue is data, not code: mainnet defaults ship here, and a deployment on a test
//! network replaces the contracts through configuration. Whatever the source, a catalogue is
//! validated once when it is built, so the rest of the system can trust it.

use std::fmt;
use std::str::FromStr;

use crate::amount::DECIMALS_MAX;

/// A blockchain the workers operate on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Chain {
    Tron,
    Ethereum,
    Bitcoin,
}

impl Chain {
    pub const ALL: [Chain; 3] = [Chain::Tron, Chain::Ethereum, Chain::Bitcoin];

    pub fn as_str(self) -> &'static str {
        match self {
            Chain::Tron => "tron",
            Chain::Ethereum => "ethereum",
            Chain::Bitcoin => "bitcoin",
        }
    }

    /// The chain's own coin, which pays its fees.
    pub fn native_symbol(self) -> &'static str {
        match self {
            Chain::Tron => "TRX",
            Chain::Ethereum => "ETH",
            Chain::Bitcoin => "BTC",
        }
    }
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown chain {got:?}: expected one of tron, ethereum, bitcoin")]
pub struct ParseChainError {
    pub got: String,
}

impl FromStr for Chain {
    type Err = ParseChainError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Chain::ALL
            .into_iter()
            .find(|chain| chain.as_str() == text)
            .ok_or_else(|| ParseChainError {
                got: text.chars().take(40).collect(),
            })
    }
}

/// An asset on one chain: its native coin (no contract) or a token (with its contract address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    pub symbol: String,
    pub chain: Chain,
    pub decimals: u8,
    pub contract: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssetError {
    #[error("asset {symbol} on {chain} is listed twice")]
    Duplicate { symbol: String, chain: Chain },
    #[error("asset symbol {0:?} must be 1 to 20 characters of A-Z, 0-9 and '-'")]
    BadSymbol(String),
    #[error("asset {symbol} has {decimals} decimals, at most {DECIMALS_MAX} are possible")]
    BadDecimals { symbol: String, decimals: u8 },
    #[error("asset {symbol} is {chain}'s native coin and must not have a contract")]
    NativeWithContract { symbol: String, chain: Chain },
    #[error("token {symbol} on {chain} needs a contract address")]
    TokenWithoutContract { symbol: String, chain: Chain },
    #[error("no asset {symbol} on {chain}; known: {known}")]
    Unknown {
        symbol: String,
        chain: Chain,
        known: String,
    },
}

/// The validated set of assets a deployment handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetCatalogue {
    assets: Vec<Asset>,
}

impl AssetCatalogue {
    /// Mainnet assets: TRX, USDT-TRC20, ETH, USDT-ERC20 and BTC.
    pub fn mainnet() -> Self {
        let asset = |symbol: &str, chain, decimals, contract: Option<&str>| Asset {
            symbol: symbol.to_string(),
            chain,
            decimals,
            contract: contract.map(str::to_string),
        };
        AssetCatalogue::new(vec![
            asset("TRX", Chain::Tron, 6, None),
            asset(
                "USDT",
                Chain::Tron,
                6,
                Some("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"),
            ),
            asset("ETH", Chain::Ethereum, 18, None),
            asset(
                "USDT",
                Chain::Ethereum,
                6,
                Some("0xdAC17F958D2ee523a2206206994597C13D831ec7"),
            ),
            asset("BTC", Chain::Bitcoin, 8, None),
        ])
        .expect("the built-in mainnet catalogue is valid")
    }

    /// Builds a catalogue from configured entries, refusing anything ambiguous.
    pub fn new(assets: Vec<Asset>) -> Result<Self, AssetError> {
        for (position, asset) in assets.iter().enumerate() {
            let symbol_ok = (1..=20).contains(&asset.symbol.len())
                && asset
                    .symbol
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-');
            if !symbol_ok {
                return Err(AssetError::BadSymbol(
                    asset.symbol.chars().take(40).collect(),
                ));
            }
            if asset.decimals > DECIMALS_MAX {
                return Err(AssetError::BadDecimals {
                    symbol: asset.symbol.clone(),
                    decimals: asset.decimals,
                });
            }
            let native = asset.symbol == asset.chain.native_symbol();
            match (native, &asset.contract) {
                (true, Some(_)) => {
                    return Err(AssetError::NativeWithContract {
                        symbol: asset.symbol.clone(),
                        chain: asset.chain,
                    });
                }
                (false, None) => {
                    return Err(AssetError::TokenWithoutContract {
                        symbol: asset.symbol.clone(),
                        chain: asset.chain,
                    });
                }
                _ => {}
            }
            if assets[..position]
                .iter()
                .any(|earlier| earlier.symbol == asset.symbol && earlier.chain == asset.chain)
            {
                return Err(AssetError::Duplicate {
                    symbol: asset.symbol.clone(),
                    chain: asset.chain,
                });
            }
        }
        Ok(AssetCatalogue { assets })
    }

    pub fn assets(&self) -> &[Asset] {
        &self.assets
    }

    /// Finds an asset by chain and symbol, or says which symbols that chain has.
    pub fn get(&self, chain: Chain, symbol: &str) -> Result<&Asset, AssetError> {
        self.assets
            .iter()
            .find(|asset| asset.chain == chain && asset.symbol == symbol)
            .ok_or_else(|| {
                let known: Vec<&str> = self
                    .assets
                    .iter()
                    .filter(|asset| asset.chain == chain)
                    .map(|asset| asset.symbol.as_str())
                    .collect();
                AssetError::Unknown {
                    symbol: symbol.chars().take(40).collect(),
                    chain,
                    known: if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    },
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Amount;

    #[test]
    fn mainnet_catalogue_has_the_seed_assets() {
        let catalogue = AssetCatalogue::mainnet();
        let usdt_tron = catalogue.get(Chain::Tron, "USDT").unwrap();
        assert_eq!(usdt_tron.decimals, 6);
        assert_eq!(
            usdt_tron.contract.as_deref(),
            Some("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t")
        );
        assert_eq!(catalogue.get(Chain::Ethereum, "ETH").unwrap().decimals, 18);
        assert_eq!(catalogue.get(Chain::Bitcoin, "BTC").unwrap().decimals, 8);
        assert_eq!(catalogue.get(Chain::Tron, "TRX").unwrap().contract, None);
        let eth = catalogue.get(Chain::Ethereum, "ETH").unwrap();
        assert_eq!(
            Amount::parse_decimal("1", eth.decimals)
                .unwrap()
                .base_units()
                .to_string(),
            "1000000000000000000"
        );
        let error = catalogue.get(Chain::Bitcoin, "USDT").unwrap_err();
        assert_eq!(error.to_string(), "no asset USDT on bitcoin; known: BTC");
    }

    #[test]
    fn chains_parse_exactly() {
        for chain in Chain::ALL {
            assert_eq!(chain.as_str().parse::<Chain>(), Ok(chain));
        }
        let error = "solana".parse::<Chain>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown chain \"solana\": expected one of tron, ethereum, bitcoin"
        );
        assert!("Tron".parse::<Chain>().is_err());
    }

    #[test]
    fn invalid_catalogues_are_refused() {
        let asset = |symbol: &str, chain, decimals, contract: Option<&str>| Asset {
            symbol: symbol.into(),
            chain,
            decimals,
            contract: contract.map(Into::into),
        };
        let cases = [
            (
                vec![
                    asset("TRX", Chain::Tron, 6, None),
                    asset("TRX", Chain::Tron, 6, None),
                ],
                "listed twice",
            ),
            (
                vec![asset("usdt", Chain::Tron, 6, Some("T"))],
                "must be 1 to 20",
            ),
            (vec![asset("ETH", Chain::Ethereum, 78, None)], "decimals"),
            (
                vec![asset("ETH", Chain::Ethereum, 18, Some("0x00"))],
                "must not have a contract",
            ),
            (
                vec![asset("USDT", Chain::Ethereum, 6, None)],
                "needs a contract",
            ),
        ];
        for (assets, expected) in cases {
            let error = AssetCatalogue::new(assets).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }
}
