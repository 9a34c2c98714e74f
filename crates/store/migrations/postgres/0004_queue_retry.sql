-- A queue's own retry policy, used by jobs enqueued without one. Null: the defaults (3
-- attempts, backoff from 2 s). Never edit this file once applied.

alter table queue add column max_attempts integer check (max_attempts between 1 and 100);
alter table queue add column backoff_base_ms bigint check (backoff_base_ms >= 0);
alter table queue add column backoff_max_ms bigint check (backoff_max_ms >= backoff_base_ms);
