-- Fleet reads (the fleet dashboard's table, `GET /api/v1/probes`): every
-- probe's last 24 hours and 30 days from one row instead of 24 hour rows,
-- 30 day rows and the current hour's minute rows; quantiles in one scan.
--
-- 1. `hist_recent`, per (probe, location), with R = `hist_mark.recent_through`
--    (an hour; the rollup keeps it equal to H, `rolled_through`):
--      bins, stats, sums  hour rows in [R - 23 h, R) + minute rows from R
--      month_stats        day rows from R's UTC day less 29 days
--                         + minute rows from R
--    (runs per phase < 2^24 in 30 days: at the shortest interval, 1 s, one
--    location makes 2.6 M.)
--    Kept exact by statement triggers: a minute row inserted at or after R is
--    added; any other write inside the windows (a late run folded into a
--    closed minute, hour or day, by this release or by N-1) refreshes that
--    (probe, location) from the stored rows. When the rollup moves H it
--    clears R (the triggers stand aside), rolls up, and refreshes every row
--    with R = H (`prober_recent_refresh`), in its transaction.
-- 2. `prober_recent(probe)`: rows whose merge is the probe's
--    `hist_hour_live` from the current UTC hour less 23 hours (`bins`,
--    `stats`, `sums`) and its `hist_day_live` from the current UTC day less
--    29 days (`month_stats`): the recent row and the pending rows when
--    R is the current hour; the hour and day rows otherwise (the first
--    minutes of an hour, before the rollup, or after N-1 moved H). Never a
--    stale answer, only, for a few minutes an hour, a slower one.
-- 3. `prober_quantile` and `prober_quantiles` in PL/pgSQL, and `prober_cat`
--    (bins concatenated over rows) for them to read without a merge.

alter table hist_mark add column recent_through timestamptz;

create table hist_recent (
    probe_id    integer not null,
    location_id smallint not null,
    bins        int8[] not null,
    stats       int8[] not null,
    sums        int8[] not null,
    month_stats int8[] not null,
    primary key (probe_id, location_id)
);

-- The refresh of every probe reads a day of hour rows and a month of day
-- rows across probes.
create index hist_hour_hour on hist_hour using brin (hour);
create index hist_day_day on hist_day using brin (day);

-- The statement that adds the per-(probe, location) sums of the rows of
-- query `src` (columns probe_id, location_id, bins, stats, sums,
-- month_stats; null where a row is not in that window) to hist_recent. A
-- text to EXECUTE, so that a trigger's own EXECUTE can read its transition
-- table (a function it calls cannot) and no temporary table is needed.
create function prober_recent_add_sql(src text) returns text
language sql immutable as $$
    select format($sql$
        with src as materialized (%s),
        eb as (
            select probe_id, location_id, e & -4294967296 as k, e & 4294967295 as n
            from src, unnest(src.bins) e
        ), es as (
            select probe_id, location_id, e >> 48 as p, (e >> 24) & 16777215 as r,
                   e & 16777215 as f, v as s
            from src, unnest(src.stats, src.sums) as u(e, v)
        ), em as (
            select probe_id, location_id, e >> 48 as p, (e >> 24) & 16777215 as r,
                   e & 16777215 as f
            from src, unnest(src.month_stats) e
        ), keys as (
            select distinct probe_id, location_id from src
        ), b as (
            select probe_id, location_id, array_agg(k | n order by k) as bins
            from (select probe_id, location_id, k, sum(n)::int8 as n from eb group by 1, 2, 3) x
            group by 1, 2
        ), st as (
            select probe_id, location_id,
                   array_agg((p << 48) | (r << 24) | f order by p) as stats,
                   array_agg(s order by p) as sums
            from (select probe_id, location_id, p, sum(r)::int8 as r, sum(f)::int8 as f,
                         sum(s)::int8 as s
                  from es group by 1, 2, 3) x
            group by 1, 2
        ), m as (
            select probe_id, location_id,
                   array_agg((p << 48) | (r << 24) | f order by p) as month_stats
            from (select probe_id, location_id, p, sum(r)::int8 as r, sum(f)::int8 as f
                  from em group by 1, 2, 3) x
            group by 1, 2
        )
        insert into hist_recent as h (probe_id, location_id, bins, stats, sums, month_stats)
        select probe_id, location_id, coalesce(b.bins, '{}'), coalesce(st.stats, '{}'),
               coalesce(st.sums, '{}'), coalesce(m.month_stats, '{}')
        from keys left join b using (probe_id, location_id)
        left join st using (probe_id, location_id) left join m using (probe_id, location_id)
        order by 1, 2
        on conflict (probe_id, location_id) do update
        set bins = prober_bins_add(h.bins, excluded.bins),
            stats = prober_stats_add(h.stats, excluded.stats),
            sums = prober_sums_add(h.stats, h.sums, excluded.stats, excluded.sums),
            month_stats = prober_stats_add(h.month_stats, excluded.month_stats)
    $sql$, src)
$$;

-- Rewrites hist_recent from the stored rows for R = `mark`: every row
-- (`probes` null; also records `mark` as R), or those of the (probe,
-- location) pairs `probes[i]`, `locations[i]`. Returns the rows written.
create function prober_recent_refresh(mark timestamptz, probes integer[], locations smallint[])
returns bigint
language plpgsql as $$
declare
    which text := case when probes is null then 'true'
                       else format('(probe_id, location_id) in (select * from unnest(%L::integer[], %L::smallint[]))',
                                   probes, locations) end;
    n bigint;
begin
    execute format('delete from hist_recent where %s', which);
    execute prober_recent_add_sql(format($sql$
        select probe_id, location_id, bins, stats, sums, null::int8[] as month_stats
        from hist_hour where hour >= %1$L::timestamptz - interval '23 hours' and hour < %1$L and %2$s
        union all
        select probe_id, location_id, bins, stats, sums, stats
        from hist_minute where minute >= %1$L and %2$s
        union all
        select probe_id, location_id, null, null, null, stats
        from hist_day
        where day >= date_trunc('day', %1$L::timestamptz, 'UTC') - interval '29 days' and %2$s
    $sql$, mark, which));
    get diagnostics n = row_count;
    if probes is null then
        update hist_mark set recent_through = mark;
    end if;
    return n;
end
$$;

-- Minute rows inserted at or after R are added.
create function prober_recent_minutes_added() returns trigger
language plpgsql as $$
declare
    mark timestamptz := (select recent_through from hist_mark);
begin
    if mark is not null then
        execute prober_recent_add_sql(format(
            'select probe_id, location_id, bins, stats, sums, stats as month_stats
             from prober_added where minute >= %L', mark));
    end if;
    return null;
end
$$;

-- Any other write inside a window refreshes its (probe, location) pairs.
-- `tg_argv[0]` names the time column; `prober_changed` is the transition table.
create function prober_recent_changed() returns trigger
language plpgsql as $$
declare
    mark timestamptz := (select recent_through from hist_mark);
    probes integer[];
    locations smallint[];
begin
    if mark is null then
        return null;
    end if;
    execute format('select array_agg(probe_id), array_agg(location_id)
                    from (select distinct probe_id, location_id from prober_changed where %s) c',
                   case tg_argv[0]
                       when 'minute' then format('minute >= %L', mark)
                       when 'hour' then format('hour >= %1$L::timestamptz - interval ''23 hours''
                                                and hour < %1$L', mark)
                       else format('day >= date_trunc(''day'', %L::timestamptz, ''UTC'')
                                           - interval ''29 days''', mark)
                   end)
        into probes, locations;
    if probes is not null then
        perform prober_recent_refresh(mark, probes, locations);
    end if;
    return null;
end
$$;

create trigger hist_minute_recent_insert after insert on hist_minute
referencing new table as prober_added
for each statement execute function prober_recent_minutes_added();
create trigger hist_minute_recent_update after update on hist_minute
referencing new table as prober_changed
for each statement execute function prober_recent_changed('minute');
create trigger hist_minute_recent_delete after delete on hist_minute
referencing old table as prober_changed
for each statement execute function prober_recent_changed('minute');
create trigger hist_hour_recent_insert after insert on hist_hour
referencing new table as prober_changed
for each statement execute function prober_recent_changed('hour');
create trigger hist_hour_recent_update after update on hist_hour
referencing new table as prober_changed
for each statement execute function prober_recent_changed('hour');
create trigger hist_hour_recent_delete after delete on hist_hour
referencing old table as prober_changed
for each statement execute function prober_recent_changed('hour');
create trigger hist_day_recent_insert after insert on hist_day
referencing new table as prober_changed
for each statement execute function prober_recent_changed('day');
create trigger hist_day_recent_update after update on hist_day
referencing new table as prober_changed
for each statement execute function prober_recent_changed('day');
create trigger hist_day_recent_delete after delete on hist_day
referencing old table as prober_changed
for each statement execute function prober_recent_changed('day');

-- The rows of one probe (every location; filter on `location_id`) whose
-- merge is its last 24 hours (`bins`, `stats`, `sums`: hour rows from `at`'s
-- UTC hour less 23 hours) and its last 30 days (`month_stats`: day rows from
-- `at`'s UTC day less 29 days); null where a row is outside a window.
--   select prober_quantile(0.95, prober_cat(prober_phase(r.bins, 0)), 0),
--          sum(prober_runs(r.month_stats, 0))
--   from prober_recent(42) r
create function prober_recent(probe integer, at timestamptz default now())
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
    from hist_hour_live l, w where not w.fresh and l.probe_id = probe and l.hour >= w.day_from
    union all
    select l.location_id, null, null, null, l.stats
    from hist_day_live l, w where not w.fresh and l.probe_id = probe and l.day >= w.month_from
$$;

-- The windows as they stand now (a database migrated mid-hour reads fast at once).
select prober_recent_refresh(rolled_through, null, null) from hist_mark;

-- Quantiles of a bins array in one scan (PL/pgSQL) instead of SQL's
-- unnest + group by + window + sort. Same rule, same answers, for any input
-- (merged or not, sorted or not); 5–6× faster on merged arrays, which are
-- what every panel passes (`prober_merge` returns them sorted and added):
-- 1,000 merged 24-hour arrays of ~144 elements, p95 of each: 168 ms in SQL,
-- 29 ms here (BENCHMARKS.md "Store v2").
--
-- Rule (HdrHistogram's value_at_quantile): the high end of the first bin, in
-- key order, whose running count reaches max(1, ceil(q * total)), q at most
-- 1; for q <= 0 the low end of the first bin (HdrHistogram's
-- lowest_equivalent at q = 0; migration 0011's SQL gave its high end); null
-- when the phase has no sample.
--
-- A sorted array is scanned as it is (equal keys next to each other add up
-- in the running count, so it need not be merged); an unsorted one (rows
-- concatenated, `prober_cat`) has its phase's elements sorted first, so the
-- result never depends on the order of the input.

-- Bins arrays concatenated over rows, not added up: what the quantile
-- functions need, without `prober_merge`'s sort and group of every element.
--   select prober_quantile(0.95, prober_cat(prober_phase(bins, 0)), 0) from …
create aggregate prober_cat(int8[]) (
    sfunc = array_cat,
    stype = int8[],
    initcond = '{}',
    parallel = safe
);

create or replace function prober_quantiles(qs double precision[], bins int8[], phase integer)
returns bigint[]
language plpgsql immutable strict parallel safe as $$
declare
    e int8;
    k integer;
    last_key integer := -1;
    total int8 := 0;
    running int8 := 0;
    wants int8[];
    found bigint[];
    left_to_find integer;
    i integer;
    sorted boolean := true;
begin
    foreach e in array bins loop
        if e >> 48 = phase then
            total := total + (e & 4294967295);
            k := ((e >> 32) & 65535)::integer;
            sorted := sorted and k >= last_key;
            last_key := k;
        end if;
    end loop;
    if not sorted then
        -- The phase's elements in key order: equal keys side by side.
        bins := array(select x from unnest(bins) x where x >> 48 = phase order by x);
    end if;
    found := array_fill(null::bigint, array[cardinality(qs)]);
    if total = 0 or cardinality(qs) = 0 then
        return found;
    end if;
    wants := array_fill(0::int8, array[cardinality(qs)]);
    left_to_find := 0;
    for i in 1 .. cardinality(qs) loop
        if qs[i] is not null then
            wants[i] := greatest(1, ceil(least(qs[i], 1) * total));
            left_to_find := left_to_find + 1;
        end if;
    end loop;
    foreach e in array bins loop
        if e >> 48 = phase then
            running := running + (e & 4294967295);
            for i in 1 .. cardinality(qs) loop
                if found[i] is null and qs[i] is not null and running >= wants[i] then
                    k := ((e >> 32) & 65535)::integer;
                    found[i] := ((k & 255)::int8 << (k >> 8))
                                + case when qs[i] <= 0 then 0 else (1::int8 << (k >> 8)) - 1 end;
                    left_to_find := left_to_find - 1;
                end if;
            end loop;
            exit when left_to_find = 0;
        end if;
    end loop;
    return found;
end
$$;

create or replace function prober_quantile(q double precision, bins int8[], phase integer)
returns bigint
language plpgsql immutable strict parallel safe as $$
declare
    e int8;
    k integer;
    last_key integer := -1;
    total int8 := 0;
    running int8 := 0;
    want int8;
    sorted boolean := true;
begin
    foreach e in array bins loop
        if e >> 48 = phase then
            total := total + (e & 4294967295);
            k := ((e >> 32) & 65535)::integer;
            sorted := sorted and k >= last_key;
            last_key := k;
        end if;
    end loop;
    if total = 0 then
        return null;
    end if;
    if not sorted then
        -- The phase's elements in key order: equal keys side by side.
        bins := array(select x from unnest(bins) x where x >> 48 = phase order by x);
    end if;
    want := greatest(1, ceil(least(q, 1) * total));
    foreach e in array bins loop
        if e >> 48 = phase then
            running := running + (e & 4294967295);
            if running >= want then
                k := ((e >> 32) & 65535)::integer;
                return ((k & 255)::int8 << (k >> 8))
                       + case when q <= 0 then 0 else (1::int8 << (k >> 8)) - 1 end;
            end if;
        end if;
    end loop;
    return null;
end
$$;
