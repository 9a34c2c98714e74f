-- API tokens of the control plane. Only a SHA-256 of each token is kept (tokens are 256
-- random bits, so a slow hash adds nothing); the prefix identifies a token in lists and logs.
-- Never edit this file once applied.

create table api_token (
    id           bigint generated always as identity primary key,
    name         text not null check (length(name) between 1 and 100),
    role         text not null check (role in ('viewer', 'operator', 'admin')),
    token_hash   text not null unique check (length(token_hash) = 64),
    prefix       text not null check (length(prefix) between 1 and 20),
    created_at   timestamptz not null,
    last_used_at timestamptz,
    revoked_at   timestamptz
);
