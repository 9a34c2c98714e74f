-- The outbox: every event the exchange's backend is told about (a withdrawal's state
-- change, later a deposit's) is written here in the same transaction as the change itself,
-- so an event exists exactly when its change committed. `event_id` is the stable id a
-- receiver deduplicates on; `subject` (`withdrawal:42`) groups the events that must arrive
-- in order. A delivery row per (endpoint, event) is written in that same transaction for
-- every configured endpoint subscribed to the event's kind (`webhook_subscription`, kept
-- in step with the configuration by the control plane), and tracks that event's delivery
-- to that endpoint. Times are integer milliseconds. Never edit this file once applied.

create table event_outbox (
    id         integer primary key autoincrement,
    event_id   text not null unique check (length(event_id) between 1 and 64),
    kind       text not null check (length(kind) between 1 and 64),
    subject    text not null check (length(subject) between 1 and 200),
    payload    text not null check (json_valid(payload)),
    created_at integer not null
) strict;
create index event_outbox_subject on event_outbox (subject, id);
create index event_outbox_kind on event_outbox (kind, id);

create table webhook_subscription (
    endpoint text not null check (length(endpoint) between 1 and 64),
    -- A LIKE pattern over the event's kind: `withdrawal.%`, `%`.
    pattern  text not null check (length(pattern) between 1 and 64),
    primary key (endpoint, pattern)
) strict;

create table webhook_delivery (
    id               integer primary key autoincrement,
    endpoint         text not null check (length(endpoint) between 1 and 64),
    event            integer not null references event_outbox (id),
    subject          text not null,
    state            text not null check (state in ('pending', 'delivered', 'failed')),
    attempts         integer not null default 0 check (attempts >= 0),
    next_attempt_at  integer not null,
    -- A deliverer's claim: a token and until when it holds; a claim past its time is free.
    claim            integer,
    claimed_until    integer,
    first_attempt_at integer,
    last_attempt_at  integer,
    last_status      integer,
    last_error       text check (last_error is null or length(last_error) <= 2000),
    delivered_at     integer,
    constraint webhook_delivery_once unique (endpoint, event)
) strict;
create index webhook_delivery_due on webhook_delivery (state, next_attempt_at, event);
create index webhook_delivery_order on webhook_delivery (endpoint, subject, event)
    where state = 'pending';
create index webhook_delivery_event on webhook_delivery (event);
