-- `hist_recent` (migration 0014) keeps every probe's last day and month in
-- one row, kept exact by a trigger on `hist_minute` that adds the minute rows
-- the fold inserts. Two costs of that trigger, measured at 5,000 probes every
-- 1 s (a minute: 300,000 pending rows, 1.5 million bins):
--
-- 1. It grouped every bin of every inserted row by (probe, location, bin) in
--    one hash table: 3.6 s of Postgres a minute, for rows that are almost
--    always one per (probe, location), already sorted and merged. Now the
--    rows are counted per (probe, location) first: a pair with one row takes
--    its arrays as they are (every stored row is normalised: sorted, one
--    element per bin and per phase), and only pairs with several rows (a fold
--    of more than one minute, the refresh's hour, minute and day rows) are
--    merged, each pair's elements in one array normalised by a function call.
--    Measured equal, byte for byte, on one minute, two minutes and a refresh;
--    0.17 s instead of 3.6 s for the one-minute insert.
-- 2. Its upsert merged each minute into the probe's whole day of bins
--    (`prober_bins_add` over ~2,500 elements for a probe every 1 s, ~2 ms),
--    so a minute cost grew with the day, not with the minute's runs. Now the
--    minutes added since R go to the row's `fresh_*` columns, merged with
--    the other minutes since R only (at most an hour), and `prober_recent`
--    returns them as one more row, which every reader already sums (they
--    sum the pending rows the same way). The hourly refresh rewrites each
--    row whole, `fresh_*` empty again.
--
-- 3. A fold that both updated a minute row at or after R (a late run into a
--    minute already folded) and inserted a new one counted the new one twice:
--    Postgres fires the statement's update trigger first, whose refresh of
--    the pair reads the inserted row too, then the insert trigger adds it
--    again. The fold now adds late rows into existing minute rows in a
--    statement of its own, then inserts the new minutes in another that
--    leaves alone any row whose minute row exists (`store/rollup.rs`).
--
-- The previous release (N-1), whose fold fires the same trigger and whose
-- reads call `prober_recent`, gets these definitions too.

alter table hist_recent
    alter column bins set default '{}',
    alter column stats set default '{}',
    alter column sums set default '{}',
    alter column month_stats set default '{}',
    add column fresh_bins int8[] not null default '{}',
    add column fresh_stats int8[] not null default '{}',
    add column fresh_sums int8[] not null default '{}',
    add column fresh_month_stats int8[] not null default '{}';

-- The statement that adds the per-(probe, location) sums of the rows of
-- query `src` to hist_recent's columns named `prefix` || bins, stats, sums,
-- month_stats ('' for the day and month as of R, 'fresh_' for the minutes
-- added since).
create function prober_recent_merge_sql(src text, prefix text) returns text
language sql immutable as $$
    select format($sql$
        with src as materialized (%1$s),
        keys as (
            select probe_id, location_id, count(*) as n, min(bins) as bins,
                   min(stats) as stats, min(sums) as sums, min(month_stats) as month_stats
            from src group by 1, 2
        ), b as (
            select probe_id, location_id, bins from keys where n = 1
            union all
            select probe_id, location_id, prober_bins_norm(array_agg(e))
            from src join keys k using (probe_id, location_id), unnest(src.bins) e
            where k.n > 1 group by 1, 2
        ), st as (
            select probe_id, location_id, stats, sums from keys where n = 1
            union all
            select probe_id, location_id, prober_stats_add(array_agg(e), '{}'),
                   prober_sums_add(array_agg(e), array_agg(v), '{}', '{}')
            from src join keys k using (probe_id, location_id),
                 unnest(src.stats, src.sums) as u(e, v)
            where k.n > 1 group by 1, 2
        ), m as (
            select probe_id, location_id, month_stats from keys where n = 1
            union all
            select probe_id, location_id, prober_stats_add(array_agg(e), '{}')
            from src join keys k using (probe_id, location_id), unnest(src.month_stats) e
            where k.n > 1 group by 1, 2
        )
        insert into hist_recent as h
            (probe_id, location_id, %2$sbins, %2$sstats, %2$ssums, %2$smonth_stats)
        select probe_id, location_id, coalesce(b.bins, '{}'), coalesce(st.stats, '{}'),
               coalesce(st.sums, '{}'), coalesce(m.month_stats, '{}')
        from keys left join b using (probe_id, location_id)
        left join st using (probe_id, location_id) left join m using (probe_id, location_id)
        order by 1, 2
        on conflict (probe_id, location_id) do update
        set %2$sbins = prober_bins_add(h.%2$sbins, excluded.%2$sbins),
            %2$sstats = prober_stats_add(h.%2$sstats, excluded.%2$sstats),
            %2$ssums = prober_sums_add(h.%2$sstats, h.%2$ssums, excluded.%2$sstats, excluded.%2$ssums),
            %2$smonth_stats = prober_stats_add(h.%2$smonth_stats, excluded.%2$smonth_stats)
    $sql$, src, prefix)
$$;

-- The refresh's statement (migration 0014's name): the day and month as of R.
create or replace function prober_recent_add_sql(src text) returns text
language sql immutable as $$
    select prober_recent_merge_sql(src, '')
$$;

-- Minute rows inserted at or after R are added to the row's minutes since R.
create or replace function prober_recent_minutes_added() returns trigger
language plpgsql as $$
declare
    mark timestamptz := (select recent_through from hist_mark);
begin
    if mark is not null then
        execute prober_recent_merge_sql(format(
            'select probe_id, location_id, bins, stats, sums, stats as month_stats
             from prober_added where minute >= %L', mark), 'fresh_');
    end if;
    return null;
end
$$;

-- Migration 0020's reader with the minutes since R as one more row.
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
    select r.location_id, r.fresh_bins, r.fresh_stats, r.fresh_sums, r.fresh_month_stats
    from hist_recent r, w
    where w.fresh and r.probe_id = probe and cardinality(r.fresh_stats) > 0
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
