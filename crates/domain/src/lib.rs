//! The domain of CoinSensei's workers: money as integers in base units, chains and their
//! assets, the worker state machines and the limits every loop is held to.
//!
//! This crate does no I/O, no async, no SQL and no serialization: it is the vocabulary the
//! store, the workers and the control plane share, and the place where the rules that keep
//! money safe are written once and tested by tables.

#[macro_use]
pub mod enums;

pub mod access;
pub mod amount;
pub mod asset;
pub mod autoscale;
pub mod health;
pub mod job;
pub mod limits;
pub mod text;
pub mod withdrawal;
pub mod worker;

pub use access::Role;
pub use amount::{Amount, AmountError};
pub use asset::{Asset, AssetCatalogue, AssetError, Chain, ParseChainError};
pub use enums::ParseEnumError;
pub use job::{JobState, Name, NameError, RetryPolicy};
pub use text::{Controls, TextError, canonical_id, check_text};
pub use withdrawal::WithdrawalState;
pub use worker::{
    ControlAction, ControlDecision, ControlRefusal, DesiredState, WorkerId, WorkerIdError,
    WorkerKind, WorkerStatus,
};
