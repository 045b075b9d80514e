-- The notification outbox. A notification is recorded in the same transaction
-- as the alert state change that causes it (before anything is sent), so a
-- restart neither loses nor duplicates one. The delivery worker claims due
-- rows (for update skip locked), sends them, and marks them delivered, or
-- retries with backoff, or gives up (failed_at) with the reason.

create table notifications (
    id              bigserial primary key,
    alert_key       text not null,
    receiver        text not null,                 -- the receiver's name in prober.yaml
    event           text not null check (event in ('trigger', 'resolve')),
    dedup_key       text not null,                 -- alert key + fired_at: stable for one incident
    payload         jsonb not null,                -- what happened; rendered per receiver type when sent
    created_at      timestamptz not null default now(),
    attempts        integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    delivered_at    timestamptz,
    failed_at       timestamptz,                   -- given up (permanent error or 24 h of failures)
    last_error      text,
    unique (receiver, dedup_key, event)
);

create index notifications_due on notifications (next_attempt_at)
    where delivered_at is null and failed_at is null;
create index notifications_alert on notifications (alert_key, dedup_key);
