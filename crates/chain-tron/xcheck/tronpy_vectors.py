"""Builds and signs TRON transfers with tronpy, offline, for chain-tron's cross-check.

Reads a JSON array of cases on stdin and prints, for each, the raw_data_hex, txid and
signature tronpy makes. tronpy is independent code: its protobuf comes from Google's
protobuf runtime over java-tron's own .proto (tronpy.proto.tron_pb2), the call data from
eth_abi, the signature from libsecp256k1 (coincurve). Nothing here touches the network: the
reference block is given, and the client object is never asked anything.

A case: {"key": hex, "to": base58, "contract": base58 or null, "amount": decimal string,
"ref_block_id": hex, "timestamp": ms, "expiration": ms, "fee_limit": sun}.
"""

import json
import sys

from eth_abi import encode
from tronpy import Tron
from tronpy.keys import PrivateKey, to_hex_address


def build(client, case):
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
    json.dump([build(client, case) for case in cases], sys.stdout)


main()
