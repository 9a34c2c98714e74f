-- Nonces of sending addresses (Ethereum); see the Postgres migration of the same number.
-- Times are integer milliseconds. Never edit this file once applied.

create table nonce_counter (
    chain      text not null,
    address    text not null,
    next_nonce integer not null check (next_nonce >= 0),
    primary key (chain, address)
) strict;

create table nonce_use (
    chain          text not null,
    address        text not null,
    nonce          integer not null check (nonce >= 0),
    holder         text not null check (length(holder) between 1 and 200),
    reserved_until integer not null,
    txid           text check (txid is null or length(txid) between 1 and 100),
    primary key (chain, address, nonce)
) strict;

create index nonce_use_unbound on nonce_use (chain, address, nonce) where txid is null;
