-- Alert state, one row per (probe, rule, location), and every transition.
-- The state machine is ok → pending → firing → resolved (→ pending again on
-- the next failure). A restart reads this table and continues where it was.

create table alerts (
    alert_key             text primary key,      -- probe/rule/location: stable, used as the dedup key
    probe                 text not null,
    rule                  text not null,         -- e.g. failing
    location              text not null,
    severity              text not null check (severity in ('page', 'ticket')),
    state                 text not null check (state in ('ok', 'pending', 'firing', 'resolved')),
    consecutive_failures  integer not null default 0,
    consecutive_successes integer not null default 0,
    since                 timestamptz not null,  -- when the current state began
    fired_at              timestamptz,           -- when the current (or last) firing began
    resolved_at           timestamptz,
    last_error_class      text,
    last_error_message    text,
    updated_at            timestamptz not null default now()
);

create index alerts_active on alerts (state) where state in ('pending', 'firing');

create table alert_transitions (
    id         bigserial primary key,
    alert_key  text not null references alerts (alert_key),
    from_state text not null,
    to_state   text not null,
    at         timestamptz not null,
    reason     text not null
);

create index alert_transitions_at on alert_transitions (at desc);
