"""Builds and signs TRON transfers with tronpy, offline, for chain-tron's cross-check.

Reads a JSON array of cases on stdin and prints, for each, the raw_data_hex, txid and
signature tronpy makes. tronpy is independent code: its protobuf comes from Google's
protobuf runtime over java-tron's own .proto (tronpy.proto.tron_pb2), the call data from
eth_abi, the signature from libsecp256k1 (coincurve). Nothing here touches the network: the
reference block is given, and the client object is never asked anything.

A case: {"key": hex, "to": base58, "contract": base58 or null, "amount": decimal string,
"ref_block_id": hex, "timestamp": ms, "expiration": ms, "fee_limit": sun}.

A Stake 2.0 case has "kind": "delegate" or "undelegate", "receiver": base58 and "balance": sun
instead of "to", "contract", "amount" and "fee_limit". tronpy builds its raw_data JSON
(trx.delegate_resource / trx.undelegate_resource, energy), but its offline protobuf covers
transfers only and its bundled tron_pb2 lacks the two contract messages: they are declared
here from java-tron's balance_contract.proto (../../../../shared/fixtures/tron/stake2.proto.md:
field numbers and types) and encoded by Google's protobuf runtime, inside tronpy's own
Transaction.raw.
"""

import json
import sys

from eth_abi import encode
from tronpy import Tron
from tronpy.keys import PrivateKey, to_hex_address


def stake2_messages():
    """DelegateResourceContract and UnDelegateResourceContract, declared from java-tron's proto."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    proto = descriptor_pb2.FileDescriptorProto(name="stake2_xcheck.proto", package="xcheck", syntax="proto3")
    field = descriptor_pb2.FieldDescriptorProto
    fields = {
        "DelegateResourceContract": [
            ("owner_address", 1, field.TYPE_BYTES),
            ("resource", 2, field.TYPE_INT32),
            ("balance", 3, field.TYPE_INT64),
            ("receiver_address", 4, field.TYPE_BYTES),
            ("lock", 5, field.TYPE_BOOL),
            ("lock_period", 6, field.TYPE_INT64),
        ],
        "UnDelegateResourceContract": [
            ("owner_address", 1, field.TYPE_BYTES),
            ("resource", 2, field.TYPE_INT32),
            ("balance", 3, field.TYPE_INT64),
            ("receiver_address", 4, field.TYPE_BYTES),
        ],
    }
    for name, declared in fields.items():
        message = proto.message_type.add(name=name)
        for field_name, number, kind in declared:
            message.field.add(name=field_name, number=number, type=kind, label=field.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"xcheck.{name}")) for name in fields}


# ResourceCode (common.proto).
RESOURCE_CODES = {"BANDWIDTH": 0, "ENERGY": 1}


def build_delegation(client, case, messages):
    import hashlib

    import google.protobuf.any_pb2
    from tronpy.proto import tron_pb2

    key = PrivateKey(bytes.fromhex(case["key"]))
    owner = key.public_key.to_base58check_address()
    if case["kind"] == "delegate":
        builder = client.trx.delegate_resource(owner, case["receiver"], case["balance"], "ENERGY")
    else:
        builder = client.trx.undelegate_resource(owner, case["receiver"], case["balance"], "ENERGY")
    raw_data = builder._raw_data
    contract = raw_data["contract"][0]
    value = contract["parameter"]["value"]
    message = messages[contract["type"]](
        owner_address=bytes.fromhex(value["owner_address"]),
        resource=RESOURCE_CODES[value["resource"]],
        balance=value["balance"],
        receiver_address=bytes.fromhex(value["receiver_address"]),
    )
    if value.get("lock"):
        message.lock = True
    ref_block_id = case["ref_block_id"]
    raw = tron_pb2.Transaction.raw(
        # java-tron's reference: bytes 6..8 and 8..16 of the block id.
        ref_block_bytes=bytes.fromhex(ref_block_id[12:16]),
        ref_block_hash=bytes.fromhex(ref_block_id[16:32]),
        expiration=case["expiration"],
        timestamp=case["timestamp"],
        contract=[
            tron_pb2.Transaction.Contract(
                type=getattr(tron_pb2.Transaction.Contract.ContractType, contract["type"]),
                parameter=google.protobuf.any_pb2.Any(
                    type_url=contract["parameter"]["type_url"],
                    value=message.SerializeToString(),
                ),
            )
        ],
    ).SerializeToString()
    txid = hashlib.sha256(raw).hexdigest()
    signature = key.sign_msg_hash(bytes.fromhex(txid))
    return {
        "owner": owner,
        "raw_data_hex": raw.hex(),
        "txid": txid,
        "signature": signature.hex(),
    }


def build(client, case, messages):
    if case.get("kind") in ("delegate", "undelegate"):
        return build_delegation(client, case, messages)
    key = PrivateKey(bytes.fromhex(case["key"]))
    owner = key.public_key.to_base58check_address()
    amount = int(case["amount"])
    if case["contract"] is None:
        builder = client.trx.transfer(owner, case["to"], amount)
    else:
        recipient = bytes.fromhex(to_hex_address(case["to"])[2:])
        data = bytes.fromhex("a9059cbb") + encode(["address", "uint256"], [recipient, amount])
        builder = client.trx._build_transaction(
            "TriggerSmartContract",
            {
                "owner_address": to_hex_address(owner),
                "contract_address": to_hex_address(case["contract"]),
                "data": data.hex(),
                "call_value": 0,
            },
        )
        builder.fee_limit(case["fee_limit"])
    # The builder stamps the current time; the case's window replaces it before the build.
    builder._raw_data["timestamp"] = case["timestamp"]
    builder._raw_data["expiration"] = case["expiration"]
    transaction = builder.build(offline=True, ref_block_id=case["ref_block_id"])
    from tronpy.proto import transaction as proto_transaction

    raw = proto_transaction._raw_data_to_protobuf(transaction._raw_data).SerializeToString()
    signature = key.sign_msg_hash(bytes.fromhex(transaction.txid))
    return {
        "owner": owner,
        "raw_data_hex": raw.hex(),
        "txid": transaction.txid,
        "signature": signature.hex(),
    }


def main():
    cases = json.load(sys.stdin)
    # A client for its builders only; the provider is never called (offline builds).
    client = Tron(network="mainnet")
    messages = stake2_messages()
    json.dump([build(client, case, messages) for case in cases], sys.stdout)


main()
