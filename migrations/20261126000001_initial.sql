-- prober's store: probe definitions, raw runs, and exact latency histograms.
-- Never edit this file once released: add a new migration instead, and keep
-- each one compatible with the previous release's binary (add, backfill, then
-- remove in a later release).

-- === dimensions: small ids keep the run rows short ===

-- every probe name ever seen
create table probes (
    id         serial primary key,
    name       text not null unique,
    created_at timestamptz not null default now()
);

-- every version (content hash) of every probe, and when it was first seen
create table probe_versions (
    id            serial primary key,
    probe_id      integer not null references probes (id),
    version       text not null,
    -- the definition as written, secret header values redacted
    definition    jsonb not null,
    source        text not null,
    first_seen_at timestamptz not null default now(),
    unique (probe_id, version)
);

-- where runs come from (an instance's `location` setting)
create table locations (
    id   smallserial primary key,
    name text not null unique
);

-- prober build versions that recorded runs
create table builds (
    id      smallserial primary key,
    version text not null unique
);

-- the error classes of failed runs; ids are stable
create table error_classes (
    id   smallint primary key,
    name text not null unique
);
insert into error_classes (id, name) values
    (1, 'dns'), (2, 'connect'), (3, 'tls'), (4, 'timeout'), (5, 'http_status'),
    (6, 'assertion'), (7, 'body_too_large'), (8, 'redirect_limit'),
    (9, 'invalid_response'), (10, 'config');

-- the phases histograms are kept for; ids are stable
create table phases (
    id   smallint primary key,
    name text not null unique
);
insert into phases (id, name) values
    (0, 'total'), (1, 'dns'), (2, 'connect'), (3, 'tls'), (4, 'first_byte'), (5, 'transfer');

-- === raw runs, partitioned by day of scheduled_at ===

create table runs (
    scheduled_at   timestamptz not null,  -- the tick the run belonged to
    run_id         uuid not null,         -- UUIDv7; writes are idempotent on it
    probe_id       integer not null,
    version_id     integer not null,
    location_id    smallint not null,
    build_id       smallint not null,
    lateness_us    integer not null,      -- started_at - scheduled_at
    total_us       integer not null,
    dns_us         integer,               -- null: phase not reached
    connect_us     integer,
    tls_us         integer,
    first_byte_us  integer,
    transfer_us    integer,
    response_bytes integer not null,
    status_code    smallint,
    error_class    smallint,              -- null when the run succeeded
    success        boolean not null,
    error_message  text,
    primary key (scheduled_at, run_id)
) partition by range (scheduled_at);

create index runs_probe_time on runs (probe_id, scheduled_at);

-- started_at is derived, never stored twice
create view runs_view as
select r.run_id, p.name as probe, l.name as location, v.version, b.version as build,
       r.scheduled_at, r.scheduled_at + r.lateness_us * interval '1 microsecond' as started_at,
       r.lateness_us, r.success, e.name as error_class, r.error_message, r.status_code,
       r.dns_us, r.connect_us, r.tls_us, r.first_byte_us, r.transfer_us, r.total_us,
       r.response_bytes
from runs r
join probes p on p.id = r.probe_id
join probe_versions v on v.id = r.version_id
join locations l on l.id = r.location_id
join builds b on b.id = r.build_id
left join error_classes e on e.id = r.error_class;

-- === histograms: one row per non-empty HdrHistogram bin (2 significant digits) ===
-- Minute data is partitioned by day; hour and day rollups are plain tables.
-- All three are incremented by the same statement that inserts the runs, and
-- only for runs actually inserted, so a replayed batch never counts twice.

create table minute_bins (
    minute      timestamptz not null,
    probe_id    integer not null,
    location_id smallint not null,
    phase       smallint not null,
    bin_lo_us   bigint not null,
    bin_hi_us   bigint not null,
    count       bigint not null,
    primary key (probe_id, phase, minute, location_id, bin_lo_us)
) partition by range (minute);

create table minute_counters (
    minute      timestamptz not null,
    probe_id    integer not null,
    location_id smallint not null,
    phase       smallint not null,
    runs        bigint not null,  -- samples of this phase
    failures    bigint not null,  -- of those, from failed runs
    sum_us      bigint not null,
    primary key (probe_id, phase, minute, location_id)
) partition by range (minute);

create table hour_bins (like minute_bins);
alter table hour_bins rename column minute to hour;
alter table hour_bins add primary key (probe_id, phase, hour, location_id, bin_lo_us);

create table hour_counters (like minute_counters);
alter table hour_counters rename column minute to hour;
alter table hour_counters add primary key (probe_id, phase, hour, location_id);

create table day_bins (like minute_bins);
alter table day_bins rename column minute to day;
alter table day_bins add primary key (probe_id, phase, day, location_id, bin_lo_us);

create table day_counters (like minute_counters);
alter table day_counters rename column minute to day;
alter table day_counters add primary key (probe_id, phase, day, location_id);

-- === partitions ===

-- Creates the partition of `parent` for one UTC day, if missing.
create function prober_ensure_partition(parent text, day date) returns void
language plpgsql as $$
declare
    part text := parent || '_p' || to_char(day, 'YYYYMMDD');
begin
    execute format(
        'create table if not exists %I partition of %I for values from (%L) to (%L)',
        part, parent,
        (day::timestamp at time zone 'UTC'),
        ((day + 1)::timestamp at time zone 'UTC'));
end $$;

-- Drops the day partitions of `parent` that end before `before`; returns how many.
create function prober_drop_partitions(parent text, before date) returns integer
language plpgsql as $$
declare
    part record;
    dropped integer := 0;
begin
    for part in
        select c.relname
        from pg_inherits i
        join pg_class c on c.oid = i.inhrelid
        join pg_class p on p.oid = i.inhparent
        where p.relname = parent
          and c.relname ~ ('^' || parent || '_p[0-9]{8}$')
          and to_date(right(c.relname, 8), 'YYYYMMDD') < before
    loop
        execute format('drop table %I', part.relname);
        dropped := dropped + 1;
    end loop;
    return dropped;
end $$;

-- === quantiles from bins ===

-- HdrHistogram's value_at_quantile over bins: the high end of the first bin (in
-- bin order) whose running count reaches max(1, ceil(q * total)). Pass the
-- bins' high ends and counts as arrays ordered by bin, e.g.
--   select prober_quantile(0.95, array_agg(hi order by hi), array_agg(n order by hi))
--   from (select bin_hi_us hi, sum(count) n from minute_bins where ... group by 1) b;
create function prober_quantile(q double precision, bin_hi bigint[], counts bigint[])
returns bigint
language sql immutable parallel safe as $$
    with b as (
        select ord, hi, sum(n) over (order by ord) as running, sum(n) over () as total
        from unnest(bin_hi, counts) with ordinality as u(hi, n, ord)
    )
    select hi from b
    where running >= greatest(1, ceil(least(greatest(q, 0), 1) * total))
    order by ord
    limit 1
$$;
