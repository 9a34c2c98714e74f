//! TRON, built locally: TRX and USDT-TRC20 transfers made from integers as protobuf
//! transactions (`transaction.rs`), their txid and signature computed in this process and
//! checked byte for byte against tronpy (`xcheck/`), a full node's HTTP API for everything
//! read from the chain and for broadcast.

pub mod proto;
pub mod transaction;

pub use transaction::{RefBlock, Unsigned, Window};
