-- Store v2 histograms: one row per (probe, location, period) holding every
-- phase's bins and counters, instead of one row per (…, phase, bin).
--
-- Encoding (ARCHITECTURE.md "Histogram rows" says why arrays, not bytea):
--   bins  int8[]  one element per non-empty bin, sorted:
--                 phase << 48 | key << 32 | count      (count < 2^32)
--                 key = bucket << 8 | sub, the HdrHistogram bin (2 significant
--                 digits, 1 µs unit): low end = sub << bucket,
--                 high end = low + 2^bucket - 1
--   stats int8[]  one element per phase, sorted: phase << 48 | runs << 24 | failures
--                 (runs, failures < 2^24 per row and phase)
--   sums  int8[]  the phase's sum of µs, aligned with `stats`
-- SQL decodes them with `unnest` (C speed); merging is an aggregate.
--
-- Write path: the writer inserts runs and, for the runs it inserted, one
-- `hist_pending` row per (probe, location, minute) of the batch; no upsert, no
-- lock shared with anything else. A background fold (`store/rollup.rs`) moves
-- pending rows of closed minutes into `hist_minute`, and into `hist_hour` and
-- `hist_day` when their minute is before the mark H (late runs); it rolls
-- closed hours [H, H') of `hist_minute` into `hist_hour` and `hist_day` and
-- moves H, in one short transaction under an advisory lock. Each pending row
-- is deleted in the transaction that counts it, so a run is counted once at
-- every resolution.
--
-- Readers use the `*_live` views (same columns as before): stored rows plus
-- what is not folded or rolled up yet, exact at every moment.
--
-- Upgrade: the v1 tables' content is copied here and the v1 tables are
-- emptied, not dropped: a previous release (N-1) still writing them during a
-- rolling upgrade, or after a rollback, keeps working, and the live views
-- read what it writes there. A later release drops them.
--
-- Every key leads with probe_id, the distribution column (Citus).

create table hist_minute (
    probe_id    integer not null,
    location_id smallint not null,
    minute      timestamptz not null,
    bins        int8[] not null,
    stats       int8[] not null,
    sums        int8[] not null,
    primary key (probe_id, location_id, minute)
) partition by range (minute);

create table hist_hour (
    probe_id    integer not null,
    location_id smallint not null,
    hour        timestamptz not null,
    bins        int8[] not null,
    stats       int8[] not null,
    sums        int8[] not null,
    primary key (probe_id, location_id, hour)
);

create table hist_day (
    probe_id    integer not null,
    location_id smallint not null,
    day         timestamptz not null,
    bins        int8[] not null,
    stats       int8[] not null,
    sums        int8[] not null,
    primary key (probe_id, location_id, day)
);

-- Short-lived: rows live until the fold after their minute closes.
create table hist_pending (
    probe_id    integer not null,
    location_id smallint not null,
    minute      timestamptz not null,
    bins        int8[] not null,
    stats       int8[] not null,
    sums        int8[] not null
);
create index hist_pending_probe on hist_pending (probe_id, minute);

-- H: minutes before it are in hist_hour and hist_day.
create table hist_mark (
    only_row    boolean primary key default true check (only_row),
    rolled_through timestamptz not null
);

-- The rollup reads minute rows by time across probes.
create index hist_minute_minute on hist_minute using brin (minute);

-- JIT compilation costs seconds on the dashboards' queries (their row
-- estimates through the views' `unnest` cross `jit_above_cost`) and saves
-- nothing on them: 2.8 s of JIT for a fleet table that runs in 5 ms. New
-- sessions of this database (Grafana's) go without it; the prober's own
-- connections turn it off themselves.
do $$
begin
    execute format('alter database %I set jit = off', current_database());
exception when insufficient_privilege then
    raise notice 'JIT stays on for this database (the migrating user does not own it); for fast dashboards run ALTER DATABASE ... SET jit = off as its owner, or ALTER ROLE <grafana user> SET jit = off';
end $$;

-- === decoding ===

create function prober_bin_lo(key integer) returns bigint
language sql immutable parallel safe as $$
    select (key & 255)::bigint << (key >> 8)
$$;

create function prober_bin_hi(key integer) returns bigint
language sql immutable parallel safe as $$
    select ((key & 255)::bigint << (key >> 8)) + (1::bigint << (key >> 8)) - 1
$$;

-- The key of the bin whose low end is `lo` (HdrHistogram, 2 significant digits).
create function prober_bin_key(lo bigint) returns integer
language sql immutable parallel safe as $$
    select ((b << 8) | (lo >> b))::integer
    from (select greatest(length(ltrim(((lo | 255)::bit(64))::text, '0')) - 8, 0) as b) s
$$;

-- The sum of two bins arrays (bins with the same phase and key added).
create function prober_bins_add(a int8[], b int8[]) returns int8[]
language sql immutable parallel safe as $$
    select coalesce(array_agg(k | n order by k), '{}'::int8[])
    from (select e & -4294967296 as k, sum(e & 4294967295)::int8 as n
          from unnest(a || b) e group by 1) s
$$;

-- The sum of two stats arrays.
create function prober_stats_add(a int8[], b int8[]) returns int8[]
language sql immutable parallel safe as $$
    select coalesce(array_agg((p << 48) | (r << 24) | f order by p), '{}'::int8[])
    from (select e >> 48 as p, sum((e >> 24) & 16777215)::int8 as r, sum(e & 16777215)::int8 as f
          from unnest(a || b) e group by 1) s
$$;

-- The sum of two sums arrays, each aligned with its stats array.
create function prober_sums_add(a_stats int8[], a_sums int8[], b_stats int8[], b_sums int8[])
returns int8[]
language sql immutable parallel safe as $$
    select coalesce(array_agg(s order by p), '{}'::int8[])
    from (select e >> 48 as p, sum(v)::int8 as s
          from unnest(a_stats || b_stats, a_sums || b_sums) as u(e, v) group by 1) s
$$;

-- A bins array with equal (phase, key) elements added, sorted.
create function prober_bins_norm(a int8[]) returns int8[]
language sql immutable parallel safe as $$
    select coalesce(array_agg(k | n order by k), '{}'::int8[])
    from (select e & -4294967296 as k, sum(e & 4294967295)::int8 as n
          from unnest(a) e group by 1) s
$$;

-- Bins merged over rows: `prober_merge(bins)` (concatenated, added once at the end).
create aggregate prober_merge(int8[]) (
    sfunc = array_cat,
    stype = int8[],
    finalfunc = prober_bins_norm,
    initcond = '{}',
    parallel = safe
);

-- The elements of one phase of a sorted bins array (a binary search, not a scan).
create function prober_phase(bins int8[], phase integer) returns int8[]
language sql immutable parallel safe as $$
    select bins[width_bucket((phase::int8 << 48) - 1, bins) + 1
                : width_bucket(((phase + 1)::int8 << 48) - 1, bins)]
$$;

-- HdrHistogram's value_at_quantile over one phase of a bins array (merged or
-- not): the high end of the first bin whose running count reaches
-- max(1, ceil(q * total)); null when the phase has no sample.
--   select prober_quantile(0.95, prober_merge(bins), 0) from hist_hour where …
create function prober_quantile(q double precision, bins int8[], phase integer)
returns bigint
language sql immutable parallel safe as $$
    with b as (
        select (e >> 32) & 65535 as key, sum(e & 4294967295) as n
        from unnest(bins) e where e >> 48 = phase group by 1
    ), r as (
        select key, sum(n) over (order by key) as running, sum(n) over () as total from b
    )
    select prober_bin_hi(key::integer) from r
    where running >= greatest(1, ceil(least(greatest(q, 0), 1) * total))
    order by key
    limit 1
$$;

-- Several quantiles of one phase at once (one pass over the bins), in the
-- order asked: `prober_quantiles(array[0.5, 0.95, 0.99], bins, 0)`.
create function prober_quantiles(qs double precision[], bins int8[], phase integer)
returns bigint[]
language sql immutable parallel safe as $$
    with b as (
        select (e >> 32) & 65535 as key, sum(e & 4294967295) as n
        from unnest(bins) e where e >> 48 = phase group by 1
    ), r as materialized (
        select key, sum(n) over (order by key) as running, sum(n) over () as total from b
    )
    select array_agg((select prober_bin_hi(key::integer) from r
                      where running >= greatest(1, ceil(least(greatest(q, 0), 1) * total))
                      order by key limit 1) order by o)
    from unnest(qs) with ordinality as u(q, o)
$$;

-- Samples, failures and the sum of µs of one phase of a row (a binary search
-- in the sorted stats array; inlined by the planner, no per-row call).
create function prober_runs(stats int8[], phase integer) returns bigint
language sql immutable parallel safe as $$
    select case when stats[width_bucket((phase::int8 << 48) - 1, stats) + 1] >> 48 = phase
                then (stats[width_bucket((phase::int8 << 48) - 1, stats) + 1] >> 24) & 16777215
                else 0 end
$$;

create function prober_failures(stats int8[], phase integer) returns bigint
language sql immutable parallel safe as $$
    select case when stats[width_bucket((phase::int8 << 48) - 1, stats) + 1] >> 48 = phase
                then stats[width_bucket((phase::int8 << 48) - 1, stats) + 1] & 16777215
                else 0 end
$$;

create function prober_sum_us(stats int8[], sums int8[], phase integer) returns bigint
language sql immutable parallel safe as $$
    select case when stats[width_bucket((phase::int8 << 48) - 1, stats) + 1] >> 48 = phase
                then sums[width_bucket((phase::int8 << 48) - 1, stats) + 1]
                else 0 end
$$;

-- === v1 rows packed into the new encoding ===

create function prober_v1_pack_bins(phase smallint, lo bigint, n bigint) returns int8
language sql immutable parallel safe as $$
    select (phase::int8 << 48) | (prober_bin_key(lo)::int8 << 32) | n
$$;

create function prober_v1_pack_stats(phase smallint, runs bigint, failures bigint) returns int8
language sql immutable parallel safe as $$
    select (phase::int8 << 48) | (runs << 24) | failures
$$;

-- === live views ===
-- Readers see stored rows plus what is not folded or rolled up yet, so every
-- answer is exact whenever the fold ran. Two shapes:
-- * `hist_minute_live`, `hist_hour_live`, `hist_day_live`: rows with the
--   arrays (one row per stored row, not merged), for `prober_merge`,
--   `prober_quantile`, `prober_runs`, `prober_failures`;
-- * `minute_bins_live`, `minute_counters_live` (and hour, day), `all_bins`,
--   `all_counters`: one row per bin or per phase, the v1 columns.
-- Each also reads the v1 tables, which only a previous release still writes.

-- The v1 tables' own live content (migration 0008's rule).
create view v1_hour_bins_live as
select hour, probe_id, location_id, phase, bin_lo_us, bin_hi_us, count from hour_bins
union all
select date_trunc('hour', m.minute, 'UTC'), m.probe_id, m.location_id, m.phase, m.bin_lo_us, m.bin_hi_us, m.count
from minute_bins m where m.minute >= (select rolled_through from rollup_mark);

create view v1_day_bins_live as
select day, probe_id, location_id, phase, bin_lo_us, bin_hi_us, count from day_bins
union all
select date_trunc('day', h.hour, 'UTC'), h.probe_id, h.location_id, h.phase, h.bin_lo_us, h.bin_hi_us, h.count
from hour_bins h where h.hour >= (select day_rolled_through from rollup_mark)
union all
select date_trunc('day', m.minute, 'UTC'), m.probe_id, m.location_id, m.phase, m.bin_lo_us, m.bin_hi_us, m.count
from minute_bins m where m.minute >= (select greatest(rolled_through, day_rolled_through) from rollup_mark);

create view v1_hour_counters_live as
select hour, probe_id, location_id, phase, runs, failures, sum_us from hour_counters
union all
select date_trunc('hour', m.minute, 'UTC'), m.probe_id, m.location_id, m.phase, m.runs, m.failures, m.sum_us
from minute_counters m where m.minute >= (select rolled_through from rollup_mark);

create view v1_day_counters_live as
select day, probe_id, location_id, phase, runs, failures, sum_us from day_counters
union all
select date_trunc('day', h.hour, 'UTC'), h.probe_id, h.location_id, h.phase, h.runs, h.failures, h.sum_us
from hour_counters h where h.hour >= (select day_rolled_through from rollup_mark)
union all
select date_trunc('day', m.minute, 'UTC'), m.probe_id, m.location_id, m.phase, m.runs, m.failures, m.sum_us
from minute_counters m where m.minute >= (select greatest(rolled_through, day_rolled_through) from rollup_mark);

-- The same packed as rows (grouped by their key, so a reader's probe and time
-- conditions still reach the v1 tables' keys).
create view v1_minute_rows as
select c.probe_id, c.location_id, c.minute, coalesce(b.bins, '{}') as bins, c.stats, c.sums
from (select probe_id, location_id, minute,
             array_agg(prober_v1_pack_stats(phase, runs, failures) order by phase) as stats,
             array_agg(sum_us order by phase) as sums
      from minute_counters group by 1, 2, 3) c
left join (select probe_id, location_id, minute,
                  array_agg(prober_v1_pack_bins(phase, bin_lo_us, count) order by phase, bin_lo_us) as bins
           from minute_bins group by 1, 2, 3) b using (probe_id, location_id, minute);

create view v1_hour_rows as
select c.probe_id, c.location_id, c.hour, coalesce(b.bins, '{}') as bins, c.stats, c.sums
from (select probe_id, location_id, hour,
             array_agg(prober_v1_pack_stats(phase, runs, failures) order by phase) as stats,
             array_agg(sum_us order by phase) as sums
      from (select probe_id, location_id, hour, phase, sum(runs)::int8 runs,
                   sum(failures)::int8 failures, sum(sum_us)::int8 sum_us
            from v1_hour_counters_live group by 1, 2, 3, 4) x group by 1, 2, 3) c
left join (select probe_id, location_id, hour,
                  array_agg(prober_v1_pack_bins(phase, lo, n) order by phase, lo) as bins
           from (select probe_id, location_id, hour, phase, bin_lo_us lo, sum(count)::int8 n
                 from v1_hour_bins_live group by 1, 2, 3, 4, 5) x group by 1, 2, 3) b
     using (probe_id, location_id, hour);

create view v1_day_rows as
select c.probe_id, c.location_id, c.day, coalesce(b.bins, '{}') as bins, c.stats, c.sums
from (select probe_id, location_id, day,
             array_agg(prober_v1_pack_stats(phase, runs, failures) order by phase) as stats,
             array_agg(sum_us order by phase) as sums
      from (select probe_id, location_id, day, phase, sum(runs)::int8 runs,
                   sum(failures)::int8 failures, sum(sum_us)::int8 sum_us
            from v1_day_counters_live group by 1, 2, 3, 4) x group by 1, 2, 3) c
left join (select probe_id, location_id, day,
                  array_agg(prober_v1_pack_bins(phase, lo, n) order by phase, lo) as bins
           from (select probe_id, location_id, day, phase, bin_lo_us lo, sum(count)::int8 n
                 from v1_day_bins_live group by 1, 2, 3, 4, 5) x group by 1, 2, 3) b
     using (probe_id, location_id, day);

-- === copy of the v1 tables (their live content, packed), then empty them ===

select prober_ensure_partition('hist_minute', d)
from (select distinct (minute at time zone 'UTC')::date as d from minute_counters) days;

insert into hist_minute (probe_id, location_id, minute, bins, stats, sums)
select probe_id, location_id, minute, bins, stats, sums from v1_minute_rows;
insert into hist_hour (probe_id, location_id, hour, bins, stats, sums)
select probe_id, location_id, hour, bins, stats, sums from v1_hour_rows;
insert into hist_day (probe_id, location_id, day, bins, stats, sums)
select probe_id, location_id, day, bins, stats, sums from v1_day_rows;

-- Everything copied is in all three tables: H starts at the next hour. A new
-- database has no mark until the writer starts (`Store::start_rollups`).
insert into hist_mark (rolled_through)
select date_trunc('hour', now(), 'UTC') + interval '1 hour'
where exists (select 1 from hist_minute) or exists (select 1 from hist_hour)
   or exists (select 1 from hist_day);

-- The v1 tables now hold only what a previous release writes from here on.
truncate minute_bins, minute_counters, hour_bins, hour_counters, day_bins, day_counters;
delete from rollup_mark;

create view hist_minute_live as
select probe_id, location_id, minute, bins, stats, sums from hist_minute
union all
select probe_id, location_id, minute, bins, stats, sums from hist_pending
union all
select probe_id, location_id, minute, bins, stats, sums from v1_minute_rows;

-- Hour and day: stored rows, minute rows at or after H, pending rows.
create view hist_hour_live as
select probe_id, location_id, hour, bins, stats, sums from hist_hour
union all
select probe_id, location_id, date_trunc('hour', minute, 'UTC'), bins, stats, sums
from hist_minute where minute >= (select rolled_through from hist_mark)
union all
select probe_id, location_id, date_trunc('hour', minute, 'UTC'), bins, stats, sums from hist_pending
union all
select probe_id, location_id, hour, bins, stats, sums from v1_hour_rows;

create view hist_day_live as
select probe_id, location_id, day, bins, stats, sums from hist_day
union all
select probe_id, location_id, date_trunc('day', minute, 'UTC'), bins, stats, sums
from hist_minute where minute >= (select rolled_through from hist_mark)
union all
select probe_id, location_id, date_trunc('day', minute, 'UTC'), bins, stats, sums from hist_pending
union all
select probe_id, location_id, day, bins, stats, sums from v1_day_rows;

-- The rows of the three resolutions as one relation (like `all_bins`): a
-- query fixing `resolution` reads one of them.
create view all_hist as
select 'minute'::text as resolution, minute as t, probe_id, location_id, bins, stats, sums
from hist_minute_live
union all
select 'hour', hour, probe_id, location_id, bins, stats, sums from hist_hour_live
union all
select 'day', day, probe_id, location_id, bins, stats, sums from hist_day_live;

-- One row per bin and per phase (the v1 columns). The bin's ends come from
-- its key: low = sub << bucket, high = low + 2^bucket - 1.
create view minute_bins_live as
select h.minute, h.probe_id, h.location_id, (e >> 48)::smallint as phase,
       ((e >> 32) & 255) << ((e >> 40) & 255)::int as bin_lo_us,
       (((e >> 32) & 255) << ((e >> 40) & 255)::int) + (1::bigint << ((e >> 40) & 255)::int) - 1 as bin_hi_us,
       e & 4294967295 as count
from hist_minute_live h, unnest(h.bins) e;

create or replace view hour_bins_live as
select h.hour, h.probe_id, h.location_id, (e >> 48)::smallint as phase,
       ((e >> 32) & 255) << ((e >> 40) & 255)::int as bin_lo_us,
       (((e >> 32) & 255) << ((e >> 40) & 255)::int) + (1::bigint << ((e >> 40) & 255)::int) - 1 as bin_hi_us,
       e & 4294967295 as count
from hist_hour_live h, unnest(h.bins) e;

create or replace view day_bins_live as
select h.day, h.probe_id, h.location_id, (e >> 48)::smallint as phase,
       ((e >> 32) & 255) << ((e >> 40) & 255)::int as bin_lo_us,
       (((e >> 32) & 255) << ((e >> 40) & 255)::int) + (1::bigint << ((e >> 40) & 255)::int) - 1 as bin_hi_us,
       e & 4294967295 as count
from hist_day_live h, unnest(h.bins) e;

create view minute_counters_live as
select h.minute, h.probe_id, h.location_id, (e >> 48)::smallint as phase,
       (e >> 24) & 16777215 as runs, e & 16777215 as failures, s as sum_us
from hist_minute_live h, unnest(h.stats, h.sums) as u(e, s);

create or replace view hour_counters_live as
select h.hour, h.probe_id, h.location_id, (e >> 48)::smallint as phase,
       (e >> 24) & 16777215 as runs, e & 16777215 as failures, s as sum_us
from hist_hour_live h, unnest(h.stats, h.sums) as u(e, s);

create or replace view day_counters_live as
select h.day, h.probe_id, h.location_id, (e >> 48)::smallint as phase,
       (e >> 24) & 16777215 as runs, e & 16777215 as failures, s as sum_us
from hist_day_live h, unnest(h.stats, h.sums) as u(e, s);

create or replace view all_bins as
select 'minute'::text as resolution, minute as t, probe_id, location_id, phase,
       bin_lo_us, bin_hi_us, count
from minute_bins_live
union all
select 'hour', hour, probe_id, location_id, phase, bin_lo_us, bin_hi_us, count
from hour_bins_live
union all
select 'day', day, probe_id, location_id, phase, bin_lo_us, bin_hi_us, count
from day_bins_live;

create or replace view all_counters as
select 'minute'::text as resolution, minute as t, probe_id, location_id, phase,
       runs, failures, sum_us
from minute_counters_live
union all
select 'hour', hour, probe_id, location_id, phase, runs, failures, sum_us
from hour_counters_live
union all
select 'day', day, probe_id, location_id, phase, runs, failures, sum_us
from day_counters_live;
