//! What every chain adapter shares: address validation and the provider contract's types.

pub mod address;
pub mod provider;
