-- Trend findings and change events (issue 17).
--
-- A finding is a change the trend engine found in one probe's series at one
-- location: a step (a change point, confirmed on the histograms before and
-- after it) or a drift (a Mann–Kendall trend with its Theil–Sen slope). The
-- analysis is repeated as points arrive; a later analysis that moves a
-- change point updates its row (same probe, location, phase, statistic and
-- kind, change time within the matching window), so a finding is reported
-- once. `probe_id` leads the key: the table distributes by probe like the
-- histograms (ARCHITECTURE.md, "A path past one Postgres").

create table trends (
    probe_id        integer not null,
    id              bigint generated always as identity,
    location_id     smallint not null,
    phase           smallint not null,              -- phases.id: 0 total, 1 dns, …
    statistic       text not null check (statistic in ('p50', 'p95', 'p99', 'failure_ratio')),
    kind            text not null check (kind in ('step', 'drift')),
    detected_at     timestamptz not null,           -- first reported
    updated_at      timestamptz not null,           -- last confirmed or moved
    change_at       timestamptz not null,           -- step: first point after; drift: window start
    window_end      timestamptz not null,           -- the last point the analysis saw
    before_value    double precision not null,      -- µs for latency, a ratio for failures
    after_value     double precision not null,
    absolute_change double precision not null,      -- after - before (drift: per day)
    relative_change double precision not null,      -- absolute / before
    p_value         double precision not null,
    effect_size     double precision,               -- common-language effect size (steps)
    summary         text not null,                  -- one line for people: what, where, how much
    state           text not null default 'open' check (state in ('open', 'acknowledged', 'ended')),
    acknowledged_by text,
    acknowledged_at timestamptz,
    primary key (probe_id, id)
);

create index trends_recent on trends (detected_at desc);

-- Deploys and other changes people or pipelines mark, matched to findings by
-- labels and time. Small and read whole: not distributed (a Citus reference table).
create table change_events (
    id         bigint generated always as identity primary key,
    at         timestamptz not null,
    title      text not null,
    labels     jsonb not null default '{}'::jsonb,
    created_at timestamptz not null default now()
);

create index change_events_at on change_events (at desc);
