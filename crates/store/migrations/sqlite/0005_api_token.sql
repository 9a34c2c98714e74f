-- API tokens of the control plane. Only a SHA-256 of each token is kept; the prefix
-- identifies a token in lists and logs. Times are integer milliseconds. Never edit this file
-- once applied.

create table api_token (
    id           integer primary key autoincrement,
    name         text not null check (length(name) between 1 and 100),
    role         text not null check (role in ('viewer', 'operator', 'admin')),
    token_hash   text not null unique check (length(token_hash) = 64),
    prefix       text not null check (length(prefix) between 1 and 20),
    created_at   integer not null,
    last_used_at integer,
    revoked_at   integer
) strict;
