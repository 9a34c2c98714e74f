-- Four eyes: a withdrawal above its asset's approval threshold is created in `approval` and
-- waits for approvals from distinct operator tokens (never its creator's); one row per
-- token and withdrawal, so the same token twice counts once. A rejection moves it to
-- `failed` with the reason. Never edit this file once applied.

alter table withdrawal drop constraint withdrawal_state_check;
alter table withdrawal add constraint withdrawal_state_check check (state in ('approval',
    'pending', 'processing', 'broadcast', 'confirming', 'completed', 'failed', 'canceled',
    'manual_review'));

create table withdrawal_approval (
    withdrawal_id bigint not null references withdrawal (id),
    token_id      bigint not null,
    actor         text not null check (length(actor) between 1 and 200),
    decision      text not null check (decision in ('approve', 'reject')),
    reason        text check (reason is null or length(reason) between 1 and 500),
    decided_at    timestamptz not null,
    primary key (withdrawal_id, token_id)
);
