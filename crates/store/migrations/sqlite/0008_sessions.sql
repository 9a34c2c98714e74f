-- Dashboard sessions: a browser logs in with an API token and gets a random session id in a
-- cookie. Only the SHA-256 of that id is kept, so a copy of this table opens no session. A
-- session acts as its token: it ends when the token is revoked (authentication joins the
-- token and checks it), at logout (the row is deleted) or at `expires_at`. Times are integer
-- milliseconds. Never edit this file once applied.

create table dashboard_session (
    id_hash    text primary key check (length(id_hash) = 64),
    token_id   integer not null references api_token (id) on delete cascade,
    created_at integer not null,
    expires_at integer not null check (expires_at > created_at)
) strict;

create index dashboard_session_token_id on dashboard_session (token_id);
create index dashboard_session_expires_at on dashboard_session (expires_at);
