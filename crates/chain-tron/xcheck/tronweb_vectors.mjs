// Builds and signs TRON transfers with TronWeb, offline, for chain-tron's cross-check.
//
// Reads a JSON array of cases (the shape of golden.json: {"key": hex, "to": base58,
// "contract": base58 or null, "amount": decimal string, "ref_block_id": hex, "timestamp": ms,
// "expiration": ms, "fee_limit": sun}; extra fields are ignored) from the file named as the
// first argument, or from stdin, and prints, for each, the owner, raw_data_hex, txid and
// signature TronWeb makes.
//
// Everything comes from TronWeb's own code, and nothing touches the network (no TronWeb
// instance, no node): the owner from TronWeb.address.fromPrivateKey; the raw_data JSON (the
// shape java-tron's wallet/createtransaction and wallet/triggersmartcontract answer) turned
// into protobuf by utils.transaction.txJsonToPb (TronWeb's google-protobuf classes over
// java-tron's .proto), its bytes and txID by txPbToRawDataHex and txPbToTxID; the signature
// by utils.crypto.signTransaction (noble secp256k1, RFC 6979 nonces, v = 27 + recovery id).
// The one field a node would make, the TRC-20 call data (triggersmartcontract answers it), is
// built offline instead with TronWeb's ABI encoder: a9059cbb ++ utils.abi.encodeParams
// (["address", "uint256"], [to, amount]).
//
// A Stake 2.0 case ({"kind": "delegate" | "undelegate", "receiver": base58, "balance": sun}) is
// built the same way from the JSON java-tron's wallet/delegateresource and
// wallet/undelegateresource answer (energy, unlocked), through TronWeb's own
// DelegateResourceContract / UnDelegateResourceContract classes.
//
// TronWeb is found in the node_modules directory named by COINSENSEI_TRONWEB (what `cargo
// xtask test` installs into target/tools/tronweb from package-lock.json), or else beside this
// script (after `npm ci` here).

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const modules =
    process.env.COINSENSEI_TRONWEB || join(dirname(fileURLToPath(import.meta.url)), 'node_modules');
const require = createRequire(join(modules, '..', 'tronweb_vectors.cjs'));
const { TronWeb, utils } = require('tronweb');

// TronWeb's int64 fields are JS numbers (google-protobuf's writeInt64 takes a number), exact
// only up to 2^53 - 1: a TRX amount above that cannot be given to TronWeb without rounding
// (int64's maximum rounds to 2^63, which writeInt64 then refuses), so such a case is answered
// with an error rather than with the bytes of another amount. TRC-20 amounts are uint256 in
// the call data, which the ABI encoder takes as a decimal string, exactly.
function exact(amount) {
    const number = Number(amount);
    if (!Number.isSafeInteger(number) || String(number) !== amount) {
        throw new Error(`TronWeb takes int64 amounts as JS numbers, and ${amount} is above 2^53 - 1`);
    }
    return number;
}

function build(c) {
    const owner = TronWeb.address.fromPrivateKey(c.key);
    const refBlock = c.ref_block_id;
    let contract;
    if (c.kind === 'delegate' || c.kind === 'undelegate') {
        const type = c.kind === 'delegate' ? 'DelegateResourceContract' : 'UnDelegateResourceContract';
        contract = {
            type,
            parameter: {
                type_url: `type.googleapis.com/protocol.${type}`,
                value: {
                    owner_address: TronWeb.address.toHex(owner),
                    receiver_address: TronWeb.address.toHex(c.receiver),
                    balance: exact(String(c.balance)),
                    resource: 'ENERGY',
                },
            },
        };
    } else if (c.contract === null || c.contract === undefined) {
        contract = {
            type: 'TransferContract',
            parameter: {
                type_url: 'type.googleapis.com/protocol.TransferContract',
                value: {
                    owner_address: TronWeb.address.toHex(owner),
                    to_address: TronWeb.address.toHex(c.to),
                    amount: exact(c.amount),
                },
            },
        };
    } else {
        const params = utils.abi.encodeParams(['address', 'uint256'], [c.to, c.amount]);
        contract = {
            type: 'TriggerSmartContract',
            parameter: {
                type_url: 'type.googleapis.com/protocol.TriggerSmartContract',
                value: {
                    owner_address: TronWeb.address.toHex(owner),
                    contract_address: TronWeb.address.toHex(c.contract),
                    data: 'a9059cbb' + params.replace(/^0x/, ''),
                    call_value: 0,
                },
            },
        };
    }
    const transaction = {
        visible: false,
        raw_data: {
            contract: [contract],
            // java-tron's reference: bytes 6..8 and 8..16 of the block id.
            ref_block_bytes: refBlock.slice(12, 16),
            ref_block_hash: refBlock.slice(16, 32),
            expiration: c.expiration,
            timestamp: c.timestamp,
            ...(contract.type === 'TriggerSmartContract' ? { fee_limit: c.fee_limit } : {}),
        },
    };
    const pb = utils.transaction.txJsonToPb(transaction);
    transaction.raw_data_hex = utils.transaction.txPbToRawDataHex(pb).toLowerCase();
    transaction.txID = utils.transaction.txPbToTxID(pb).replace(/^0x/, '');
    const signed = utils.crypto.signTransaction(c.key, transaction);
    return {
        owner,
        raw_data_hex: transaction.raw_data_hex,
        txid: transaction.txID,
        signature: signed.signature[0].toLowerCase(),
    };
}

const input = process.argv[2] ? readFileSync(process.argv[2], 'utf8') : readFileSync(0, 'utf8');
// A case TronWeb cannot build is answered with its error, so the caller sees which and why.
const answer = (c) => {
    try {
        return build(c);
    } catch (error) {
        return { error: String(error && error.message ? error.message : error) };
    }
};
process.stdout.write(JSON.stringify(JSON.parse(input).map(answer)));
