//! The few protobuf messages of java-tron's `Tron.proto` and `contract/*.proto` that a transfer
//! needs, written by hand with prost's derive. Field numbers and types are the protocol's;
//! fields are declared in field-number order, which is the order prost and protoc-generated
//! code (tronpy's `tron_pb2`, TronWeb's `protocol`) write them in, so the bytes agree.

/// `Transaction.Contract.ContractType` values used here.
pub const TRANSFER_CONTRACT: i32 = 1;
pub const TRIGGER_SMART_CONTRACT: i32 = 31;
pub const DELEGATE_RESOURCE_CONTRACT: i32 = 57;
pub const UNDELEGATE_RESOURCE_CONTRACT: i32 = 58;

/// The `type_url` of each contract in its `google.protobuf.Any`.
pub const TRANSFER_TYPE_URL: &str = "type.googleapis.com/protocol.TransferContract";
pub const TRIGGER_TYPE_URL: &str = "type.googleapis.com/protocol.TriggerSmartContract";
pub const DELEGATE_TYPE_URL: &str = "type.googleapis.com/protocol.DelegateResourceContract";
pub const UNDELEGATE_TYPE_URL: &str = "type.googleapis.com/protocol.UnDelegateResourceContract";

/// `ResourceCode` (`core/contract/common.proto`): what staked TRX gives.
pub const RESOURCE_BANDWIDTH: i32 = 0;
pub const RESOURCE_ENERGY: i32 = 1;

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `Transaction.Contract`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Contract {
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(message, optional, tag = "2")]
    pub parameter: Option<Any>,
    #[prost(bytes = "vec", tag = "3")]
    pub provider: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub contract_name: Vec<u8>,
    #[prost(int32, tag = "5")]
    pub permission_id: i32,
}

/// `Transaction.raw`: what the txid hashes and the signature signs. `auths` (9) and
/// `scripts` (12) are never set by this system and not modelled; a decoded transaction
/// carrying them is refused by [`crate::transaction::parse`] through its re-encoding check.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Raw {
    #[prost(bytes = "vec", tag = "1")]
    pub ref_block_bytes: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub ref_block_num: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub ref_block_hash: Vec<u8>,
    #[prost(int64, tag = "8")]
    pub expiration: i64,
    #[prost(bytes = "vec", tag = "10")]
    pub data: Vec<u8>,
    #[prost(message, repeated, tag = "11")]
    pub contract: Vec<Contract>,
    #[prost(int64, tag = "14")]
    pub timestamp: i64,
    #[prost(int64, tag = "18")]
    pub fee_limit: i64,
}

/// `Transaction` as it is sent (`ret`, field 5, is the node's and never sent).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Transaction {
    #[prost(message, optional, tag = "1")]
    pub raw_data: Option<Raw>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub signature: Vec<Vec<u8>>,
}

/// The same wire format as [`Transaction`] with `raw_data` kept as bytes: the txid is the
/// hash of exactly the bytes received, not of a re-encoding.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TransactionBytes {
    #[prost(bytes = "vec", tag = "1")]
    pub raw_data: Vec<u8>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub signature: Vec<Vec<u8>>,
}

/// `TransferContract` (TRX).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TransferContract {
    #[prost(bytes = "vec", tag = "1")]
    pub owner_address: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub to_address: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub amount: i64,
}

/// `TriggerSmartContract` (a contract call; TRC-20 `transfer` here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TriggerSmartContract {
    #[prost(bytes = "vec", tag = "1")]
    pub owner_address: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub contract_address: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub call_value: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub data: Vec<u8>,
    #[prost(int64, tag = "5")]
    pub call_token_value: i64,
    #[prost(int64, tag = "6")]
    pub token_id: i64,
}

/// `DelegateResourceContract` (Stake 2.0, type 57): `owner` lends what `balance` staked sun
/// gives of `resource` to `receiver`. `lock` and `lock_period` are never set by this system
/// (an unlocked delegation can be taken back at once), so they are absent from the bytes, as
/// proto3 leaves defaults out.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DelegateResourceContract {
    #[prost(bytes = "vec", tag = "1")]
    pub owner_address: Vec<u8>,
    #[prost(int32, tag = "2")]
    pub resource: i32,
    #[prost(int64, tag = "3")]
    pub balance: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub receiver_address: Vec<u8>,
    #[prost(bool, tag = "5")]
    pub lock: bool,
    #[prost(int64, tag = "6")]
    pub lock_period: i64,
}

/// `UnDelegateResourceContract` (Stake 2.0, type 58): takes `balance` staked sun's `resource`
/// back from `receiver`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UnDelegateResourceContract {
    #[prost(bytes = "vec", tag = "1")]
    pub owner_address: Vec<u8>,
    #[prost(int32, tag = "2")]
    pub resource: i32,
    #[prost(int64, tag = "3")]
    pub balance: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub receiver_address: Vec<u8>,
}
