-- Nonces of sending addresses (Ethereum). `nonce_counter` holds the next fresh nonce of each
-- address; `nonce_use` one row per nonce handed out: reserved by a holder until a time, then
-- bound to the txid of the transaction signed with it. A reservation whose holder died before
-- binding it expires and the nonce is handed out again, so no gap stays behind a crash.
-- Never edit this file once applied.

create table nonce_counter (
    chain      text not null,
    address    text not null,
    next_nonce bigint not null check (next_nonce >= 0),
    primary key (chain, address)
);

create table nonce_use (
    chain          text not null,
    address        text not null,
    nonce          bigint not null check (nonce >= 0),
    holder         text not null check (length(holder) between 1 and 200),
    reserved_until timestamptz not null,
    txid           text check (txid is null or length(txid) between 1 and 100),
    primary key (chain, address, nonce)
);

create index nonce_use_unbound on nonce_use (chain, address, nonce) where txid is null;
