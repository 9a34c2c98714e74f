//! What every chain adapter shares: address validation, the provider contract's types, and
//! the attempt log an adapter paying from unspent outputs records its payouts in.

pub mod address;
pub mod attempts;
pub mod provider;
