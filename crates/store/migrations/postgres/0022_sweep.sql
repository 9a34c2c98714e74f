-- Consolidation: each sweep of a deposit address into the hot wallet, and the gas top-up
-- that pays for a token sweep's gas; and each transfer of the hot wallet's balance above its
-- ceiling to the cold address (`kind = 'cold'`: `address` is then the hot wallet, its
-- payout key `cold:<id>`). A row is written before anything is signed and holds
-- what the sweep was priced at (price per gas, gas limit, amount), so a run repeated after a
-- crash builds exactly the same payments; the transactions themselves live under the nonce
-- path's payout keys `gas:<id>` (from the gas wallet) and `sweep:<id>` (from the deposit
-- address), persisted before broadcast. What the ledger reads: the deposit address, asset,
-- amount, the top-up's txid and fee, the sweep's txid and fee, and the state.
--
-- Amounts and prices are decimal text in base units (wei can pass 2^63). At most one open
-- sweep per address (`sweep_open`): an address's ETH pays both its native sweep and its
-- token sweeps' gas, so its sweeps run one after another. Never edit this file once applied.

create table sweep (
    id            bigserial primary key,
    chain         text not null check (chain in ('tron', 'ethereum')),
    kind          text not null check (kind in ('sweep', 'cold')),
    address       text not null check (length(address) between 1 and 100),
    address_index bigint not null check (address_index >= 0),
    asset         text not null check (length(asset) between 1 and 100),
    amount        text not null check (amount ~ '^[1-9][0-9]*$'),
    destination   text not null check (length(destination) between 1 and 100),
    price_per_gas text not null check (price_per_gas ~ '^[0-9]+$'),
    gas_limit     bigint not null check (gas_limit > 0),
    top_up_from   text,
    top_up_amount text check (top_up_amount is null or top_up_amount ~ '^[1-9][0-9]*$'),
    top_up_txid   text,
    top_up_fee    text check (top_up_fee is null or top_up_fee ~ '^[0-9]+$'),
    sweep_txid    text,
    sweep_fee     text check (sweep_fee is null or sweep_fee ~ '^[0-9]+$'),
    state         text not null check (state in ('topping_up', 'sweeping', 'swept', 'failed')),
    error         text,
    created_at    timestamptz not null,
    updated_at    timestamptz not null,
    check ((top_up_amount is null) = (top_up_from is null)),
    check (kind = 'sweep' or top_up_amount is null)
);

create unique index sweep_open on sweep (chain, address)
    where state in ('topping_up', 'sweeping');
create index sweep_state on sweep (chain, state, id);
