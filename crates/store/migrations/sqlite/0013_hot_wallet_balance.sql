-- What each chain's hot wallet holds of each catalogue asset, as its withdrawal worker last
-- read it from the node (every 15 s, from the reconcile round): one row per (chain, asset),
-- overwritten. `/metrics` exports it; the health checks and the hot-wallet floor read it.
-- Amounts are integers in base units, kept as decimal text (up to 2^256 - 1). Times are
-- integer milliseconds. Never edit this file once applied.

create table hot_wallet_balance (
    chain      text not null check (chain in ('tron', 'ethereum', 'bitcoin')),
    asset      text not null check (length(asset) between 1 and 20),
    address    text not null check (length(address) between 1 and 100),
    units      text not null check (length(units) between 1 and 78 and units not glob '*[^0-9]*'),
    checked_at integer not null,
    primary key (chain, asset)
) strict;

-- The last hour's completed withdrawals, newest first, for `/metrics`' completion times.
create index withdrawal_state_updated on withdrawal (state, updated_at);

-- Payout events that leave no row of their own, counted per chain for `/metrics`: a
-- `rebroadcast` is a stored transaction sent again because the node no longer knew it.
create table payout_counter (
    chain text not null check (chain in ('tron', 'ethereum', 'bitcoin')),
    kind  text not null check (kind in ('rebroadcast')),
    n     integer not null check (n >= 0),
    primary key (chain, kind)
) strict;
