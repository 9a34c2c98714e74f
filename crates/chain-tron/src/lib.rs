//! TRON, built locally: TRX and USDT-TRC20 transfers made from integers as protobuf
//! transactions (`transaction.rs`), their txid and signature computed in this process and
//! checked byte for byte against tronpy (`xcheck/`); a full node's HTTP API for everything
//! read from the chain and for broadcast, with the provider contract on top (`node.rs`); fee
//! estimates from the chain's own prices (`fee.rs`); and the rule that says when an attempt
//! is dead (`death.rs`).

pub mod death;
pub mod fee;
pub mod node;
pub mod proto;
pub mod transaction;

pub use node::{Config, Metadata, Tron};
pub use transaction::{RefBlock, Unsigned, Window};
