-- Hour blocks: the hour rows of days closed more than 35 days ago packed into
-- one row per (probe, location, UTC day) in a denser encoding, so that 400
-- days of hour histograms fit the storage budget (issue 16: 30 days of
-- minutes and 400 days of hours for 1,000 probes at 60 s in 10 GiB; hour
-- rows alone were ~12.5 GB of it, ~1.3 KB a row after TOAST's pglz).
--
-- 1. `hist_hour_block`: the day's hour rows. Every bin element is spread
--    over three aligned int2 arrays, in the order of the rows' elements
--    (hour, phase, key):
--      tags    hour << 8 | phase     (hour of the UTC day 0-23; phase < 256)
--      keys    the bin's key less the key of the element before it in
--              its hour (the hour's first element: less 0), mostly small
--      counts  the bin's count (at most 32,767)
--    and the counters as in a minute block, tagged with the hour in bits
--    56-60:
--      stats   hour << 56 | phase << 48 | runs << 24 | failures
--      sums    aligned with stats
--    TOAST compresses the tags (long runs of one value) and the differences
--    and counts (small numbers) far better than int8 elements. Measured on
--    2,400 synthetic hour rows (6 phases, 60 samples each, ~310 bins a row;
--    ARCHITECTURE.md "Hour blocks"): 1,369 bytes an hour as rows; as a
--    block, counters included, 488. The bins alone: 1,133 bytes an hour as
--    int8 elements tagged with their hour in a day row, 819 as int2 keys and
--    counts, 474 with the keys as differences.
-- 2. `prober_pack_hours(through)` moves the hour rows before `through` (a
--    UTC midnight) into blocks. A row with a count over 32,767 (a location
--    running a probe more than 9 times a second) or a phase over 255 stays
--    a row, and does not reopen its day's block. A late row of
--    a day already packed (a run replayed more than 35 days late) opens the
--    day's block back into rows, is added there, and the day is packed again.
--    `hist_mark.hours_packed_through` records how far packing reached.
-- 3. Readers: `prober_hours(from_at, to_at)`, the hour rows (columns of
--    `hist_hour`) in [from_at, to_at]: stored rows, the packed days in range,
--    the minutes not rolled up yet, pending rows and v1 rows. A probe
--    condition on its result reaches the blocks' key (it is inlined), and
--    only the days in range are opened. `prober_hist`'s hour branch and
--    `prober_recent` read it bounded; `hist_hour_live` is it unbounded (a
--    time condition on the view cannot reach a block's day: every packed
--    day of the probes asked for is opened).
--
-- When: the rollup (`store/rollup.rs`) packs the days that ended more than
-- 35 days ago: past every window the daemon reads from `hist_hour` rows
-- directly (the trend analysis' week and earlier days), and past the 30-day
-- reads (panels, fleet reads, burn rates), which then open no block.
--
-- Upgrade: nothing is moved by this migration; the first rollup packs, one
-- day with rows per rollup. A previous release (N-1, migration 0019) reads
-- hours through `hist_hour_live` and `hour_counters_live`, which include the
-- blocks unbounded: the same answers; its counter reads (burn rates) open
-- only a packed day's counters (~0.2 ms a day), its bin reads (the hour
-- resolution of its API) every packed day of the probe (~14 ms a day). Its
-- retention leaves blocks in place until this release runs again.

alter table hist_mark add column hours_packed_through timestamptz;

create table hist_hour_block (
    probe_id    integer not null,
    location_id smallint not null,
    day         timestamptz not null,
    tags        int2[] not null,
    keys        int2[] not null,
    counts      int2[] not null,
    stats       int8[] not null,
    sums        int8[] not null,
    primary key (probe_id, location_id, day)
);

-- Retention and reads across probes go by day.
create index hist_hour_block_day on hist_hour_block using brin (day);

-- Whether an hour row fits a block: every count at most 32,767, every
-- phase below 256.
create function prober_hour_packable(bins int8[], stats int8[]) returns boolean
language sql immutable parallel safe as $$
    select not exists (select from unnest(bins) e
                       where e & 4294967295 > 32767 or e >> 48 > 255)
       and not exists (select from unnest(stats) e where e >> 48 > 255)
$$;

-- The hour rows of one block (the encoding of migration 0011, tags taken
-- off), one per hour with counters (every hour row with bins has them).
-- An hour's elements are a slice of the arrays, found by binary search in
-- the sorted tags, and decoded only when its bins are read: a reader of
-- counters only, or of a few hours of the day, decodes nothing else. The
-- arrays are unnested side by side in the select list, which streams them
-- (in FROM they are materialised first).
create function prober_hour_block_hours(block_day timestamptz, b_tags int2[], b_keys int2[],
                                        b_counts int2[], b_stats int8[], b_sums int8[])
returns table (hour timestamptz, bins int8[], stats int8[], sums int8[])
language sql immutable parallel safe as $$
    select block_day + make_interval(hours => s.h::integer),
           coalesce((select array_agg(((t & 255)::int8 << 48) | (k << 32) | c::int8 order by i)
                     from (select t, c, i, sum(d) over (order by i) as k
                           from (select unnest(b_tags[s.lo:s.hi]) as t,
                                        unnest(b_keys[s.lo:s.hi]) as d,
                                        unnest(b_counts[s.lo:s.hi]) as c,
                                        generate_series(s.lo, s.hi) as i) z) x), '{}'),
           s.stats, s.sums
    from (select h, stats, sums,
                 width_bucket(((h << 8) - 1)::int2, b_tags) + 1 as lo,
                 width_bucket((((h + 1) << 8) - 1)::int2, b_tags) as hi
          from (select e >> 56 as h, array_agg(e & 72057594037927935 order by e) as stats,
                       array_agg(v order by e) as sums
                from unnest(b_stats, b_sums) as u(e, v)
                group by 1) g) s
$$;

create function prober_pack_hours(through timestamptz) returns bigint
language plpgsql as $$
declare
    n bigint;
begin
    -- Late rows of a packed day: its block goes back into rows first.
    with reopened as (
        delete from hist_hour_block b
        using (select distinct probe_id, location_id, date_trunc('day', hour, 'UTC') as day
               from hist_hour where hour < through and prober_hour_packable(bins, stats)) r
        where b.probe_id = r.probe_id and b.location_id = r.location_id and b.day = r.day
        returning b.*
    )
    insert into hist_hour as h (probe_id, location_id, hour, bins, stats, sums)
    select o.probe_id, o.location_id, k.hour, k.bins, k.stats, k.sums
    from reopened o,
         prober_hour_block_hours(o.day, o.tags, o.keys, o.counts, o.stats, o.sums) k
    on conflict (probe_id, location_id, hour) do update
    set bins = prober_bins_add(h.bins, excluded.bins),
        stats = prober_stats_add(h.stats, excluded.stats),
        sums = prober_sums_add(h.stats, h.sums, excluded.stats, excluded.sums);

    with moved as (
        delete from hist_hour h where h.hour < through and prober_hour_packable(h.bins, h.stats)
        returning h.probe_id, h.location_id, h.hour, h.bins, h.stats, h.sums
    ), t as (
        select probe_id, location_id, date_trunc('day', hour, 'UTC') as day,
               extract(hour from hour at time zone 'UTC')::int8 as h, bins, stats, sums
        from moved
    ), el as (
        select probe_id, location_id, day, (h << 56) | e as o,
               h, ((h << 8) | (e >> 48))::int2 as tag, (e >> 32) & 65535 as k,
               (e & 32767)::int2 as c
        from t, unnest(t.bins) e
    ), b as (
        select probe_id, location_id, day, array_agg(tag order by o) as tags,
               array_agg(d order by o) as keys, array_agg(c order by o) as counts
        from (select el.*,
                     (k - coalesce(lag(k) over (partition by probe_id, location_id, day, h
                                               order by o), 0))::int2 as d
              from el) x
        group by 1, 2, 3
    ), s as (
        select probe_id, location_id, day, array_agg((h << 56) | e order by (h << 56) | e) as stats,
               array_agg(v order by (h << 56) | e) as sums
        from t, unnest(t.stats, t.sums) as u(e, v)
        group by 1, 2, 3
    )
    insert into hist_hour_block (probe_id, location_id, day, tags, keys, counts, stats, sums)
    select probe_id, location_id, day, coalesce(b.tags, '{}'), coalesce(b.keys, '{}'),
           coalesce(b.counts, '{}'), coalesce(s.stats, '{}'), coalesce(s.sums, '{}')
    from s full join b using (probe_id, location_id, day)
    order by 1, 2, 3;
    get diagnostics n = row_count;

    update hist_mark set hours_packed_through = greatest(hours_packed_through, through);
    return n;
end
$$;

-- Hour rows (the columns of `hist_hour`) in [from_at, to_at]: stored,
-- packed, the minutes not rolled up yet, pending, and what a previous
-- release wrote to the v1 tables.
create function prober_hours(from_at timestamptz, to_at timestamptz)
returns setof hist_hour
language sql stable parallel safe as $$
    select h.* from hist_hour h where h.hour between from_at and to_at
    union all
    select b.probe_id, b.location_id, k.hour, k.bins, k.stats, k.sums
    from hist_hour_block b,
         prober_hour_block_hours(b.day, b.tags, b.keys, b.counts, b.stats, b.sums) k
    where b.day >= date_trunc('day', from_at, 'UTC') and b.day <= to_at
      and k.hour between from_at and to_at
    union all
    select m.probe_id, m.location_id, date_trunc('hour', m.minute, 'UTC'), m.bins, m.stats, m.sums
    from hist_minute m
    where m.minute >= (select rolled_through from hist_mark)
      and date_trunc('hour', m.minute, 'UTC') between from_at and to_at
    union all
    select p.probe_id, p.location_id, date_trunc('hour', p.minute, 'UTC'), p.bins, p.stats, p.sums
    from hist_pending p where date_trunc('hour', p.minute, 'UTC') between from_at and to_at
    union all
    select v.probe_id, v.location_id, v.hour, v.bins, v.stats, v.sums
    from v1_hour_rows v where v.hour between from_at and to_at
$$;

create or replace view hist_hour_live as
select probe_id, location_id, hour, bins, stats, sums
from prober_hours('-infinity', 'infinity');

create or replace function prober_hist(res text, from_at timestamptz, to_at timestamptz)
returns table (resolution text, t timestamptz, probe_id integer, location_id smallint,
               bins int8[], stats int8[], sums int8[])
language sql stable parallel safe as $$
    select 'minute'::text, m.minute, m.probe_id, m.location_id, m.bins, m.stats, m.sums
    from prober_minutes(from_at, to_at) m where res = 'minute'
    union all
    select 'hour', h.hour, h.probe_id, h.location_id, h.bins, h.stats, h.sums
    from prober_hours(from_at, to_at) h where res = 'hour'
    union all
    select 'day', d.day, d.probe_id, d.location_id, d.bins, d.stats, d.sums
    from hist_day_live d where res = 'day' and d.day between from_at and to_at
$$;

-- Its last 24 hours from prober_hours, opening no packed day (they are older).
create or replace function prober_recent(probe integer, at timestamptz default now())
returns table (location_id smallint, bins int8[], stats int8[], sums int8[], month_stats int8[])
language sql stable parallel safe as $$
    with w as (
        select date_trunc('hour', at, 'UTC') - interval '23 hours' as day_from,
               date_trunc('day', at, 'UTC') - interval '29 days' as month_from,
               coalesce((select recent_through = date_trunc('hour', at, 'UTC')
                         from hist_mark), false) as fresh
    )
    select r.location_id, r.bins, r.stats, r.sums, r.month_stats
    from hist_recent r, w where w.fresh and r.probe_id = probe
    union all
    select p.location_id,
           case when p.minute >= w.day_from then p.bins end,
           case when p.minute >= w.day_from then p.stats end,
           case when p.minute >= w.day_from then p.sums end,
           p.stats
    from hist_pending p, w where w.fresh and p.probe_id = probe and p.minute >= w.month_from
    union all
    select v.location_id, v.bins, v.stats, v.sums, null
    from v1_hour_rows v, w where w.fresh and v.probe_id = probe and v.hour >= w.day_from
    union all
    select v.location_id, null, null, null, v.stats
    from v1_day_rows v, w where w.fresh and v.probe_id = probe and v.day >= w.month_from
    union all
    select l.location_id, l.bins, l.stats, l.sums, null
    from prober_hours(date_trunc('hour', at, 'UTC') - interval '23 hours', 'infinity') l, w
    where not w.fresh and l.probe_id = probe
    union all
    select l.location_id, null, null, null, l.stats
    from hist_day_live l, w where not w.fresh and l.probe_id = probe and l.day >= w.month_from
$$;
