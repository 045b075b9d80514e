-- Alerting, part two: what an incident has seen (kept across restarts),
-- whether on-call heard of it, reminders, and silences from the API.

alter table alerts
    add column failed_runs      integer not null default 0,  -- failed runs of the current incident
    add column last_failure     jsonb,                       -- the incident's last failed run (notify::LastFailure)
    add column notified         boolean not null default false, -- a trigger was recorded for this incident
    add column suppressed       text,                        -- why the trigger was held back (silence, upstream)
    add column last_notified_at timestamptz;                 -- trigger or last reminder: when the next one is due

-- Reminders repeat while an alert fires: one incident may have many.
alter table notifications drop constraint notifications_event_check;
alter table notifications add constraint notifications_event_check
    check (event in ('trigger', 'resolve', 'remind'));
alter table notifications drop constraint notifications_receiver_dedup_key_event_key;
create unique index notifications_once on notifications (receiver, dedup_key, event)
    where event <> 'remind';

-- Silences created through the API (silences from prober.yaml live in memory).
-- An alert that matches an active silence still changes state and is recorded;
-- it does not notify. Deleting a silence ends it (ends_at = now); rows stay as history.
create table silences (
    id          uuid primary key,
    matchers    jsonb not null,        -- {"label or probe/rule/location/severity": "value"}: all must equal
    starts_at   timestamptz not null,
    ends_at     timestamptz not null,
    cron        text,                  -- a recurring window: starts at each cron time ...
    duration_ms bigint,                -- ... and lasts this long (between starts_at and ends_at)
    comment     text not null,
    created_by  text not null,
    created_at  timestamptz not null default now(),
    check (ends_at > starts_at),
    check ((cron is null) = (duration_ms is null))
);

create index silences_ends on silences (ends_at);
