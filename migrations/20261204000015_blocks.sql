-- Blocks: closed hours of raw runs and of minute histograms packed into one
-- row per (probe, location, hour), so a run costs its share of a compressed
-- row instead of a row of its own in `runs` (~200 bytes with its key) and,
-- at a 60 s interval, a minute row of its own (~300 bytes).
--
-- 1. `run_blocks`: one row per (probe, location, UTC hour) holding the
--    hour's runs as aligned arrays, one per column of `runs` (a run is the
--    same index in every array), compressed by TOAST when over 2 KB.
-- 2. `hist_minute_block`: one row per (probe, location, UTC hour) holding
--    the hour's minute rows in the encoding of migration 0011, each element
--    tagged with its minute of the hour in bits 56-61:
--      bins  minute << 56 | phase << 48 | key << 32 | count
--      stats minute << 56 | phase << 48 | runs << 24 | failures
--      sums  aligned with stats
--    (phase ids stay below 256: 0-5 and 100-199.) Sorted, so by minute
--    first; `prober_bins_add` and `prober_stats_add` add two blocks as they
--    add two rows, as they group by the high bits. The bins of one-sample
--    cells are left out (`prober_block_slim` below).
-- 3. `prober_pack(through)`: moves every run and every minute row before
--    `through` into the blocks, in one transaction (added to the block when
--    it exists: late runs). The rollup (`store/rollup.rs`) calls it for the
--    hours before H less an hour, so the last hour or two stay rows: the
--    fleet table's last status, a replayed batch and late runs find them
--    there. `hist_mark.packed_through` records the last `through`.
-- 4. Readers: `prober_run_rows(from, to)` and `prober_minutes(from, to)`
--    (rows with `runs`' and `hist_minute`'s columns, both bounds included)
--    read rows and blocks, opening only the blocks of the hours in range;
--    `prober_hist(resolution, from, to)` is `all_hist` between two times,
--    for the dashboards. A probe condition on their result reaches the
--    blocks' key: the functions are inlined. `hist_minute_live`, `all_hist`
--    and `runs_view` read the blocks too, unbounded (a time condition on
--    them cannot reach a block's hour: use the functions).
--
-- Upgrade: nothing is moved by this migration; the first rollup packs.
-- A previous release (N-1, before store v2) reads only `runs`: after a
-- rollback its API shows the last hour or two of runs, and the packed ones
-- again once this release runs (ARCHITECTURE.md "Blocks").

alter table hist_mark add column packed_through timestamptz;

create table run_blocks (
    probe_id       integer not null,
    location_id    smallint not null,
    hour           timestamptz not null,
    run_id         uuid[] not null,
    scheduled_at   timestamptz[] not null,
    version_id     integer[] not null,
    build_id       smallint[] not null,
    lateness_us    integer[] not null,
    total_us       integer[] not null,
    dns_us         integer[] not null,
    connect_us     integer[] not null,
    tls_us         integer[] not null,
    first_byte_us  integer[] not null,
    transfer_us    integer[] not null,
    response_bytes integer[] not null,
    status_code    smallint[] not null,
    error_class    smallint[] not null,
    success        boolean[] not null,
    error_message  text[] not null,
    detail         jsonb[] not null,
    trigger        smallint[] not null,
    primary key (probe_id, location_id, hour)
);

create table hist_minute_block (
    probe_id    integer not null,
    location_id smallint not null,
    hour        timestamptz not null,
    bins        int8[] not null,
    stats       int8[] not null,
    sums        int8[] not null,
    primary key (probe_id, location_id, hour)
);

-- A minute block leaves out the bins a cell implies: a cell (minute,
-- phase) with one sample has one bin, the one holding its sum (the sample
-- itself), so its element is dropped when packed and put back when read. At
-- a 60 s interval every cell is such a cell: the bins array is then empty
-- and a run costs its counters and its sum only.

-- The key of the bin holding `v` (`prober_bin_key`, with the bucket found
-- by a binary search in C instead of a bit string, and no FROM, so the
-- planner inlines it: a 60 s probe's day of blocks gets its bins back in
-- 9 ms instead of 22).
create function prober_key_of(v bigint) returns bigint
language sql immutable parallel safe as $$
    select (width_bucket(v, '{256,512,1024,2048,4096,8192,16384,32768,65536,131072,262144,524288,1048576,2097152,4194304,8388608,16777216,33554432,67108864,134217728,268435456,536870912,1073741824,2147483648,4294967296}'::int8[])::int8 << 8)
           | (v >> width_bucket(v, '{256,512,1024,2048,4096,8192,16384,32768,65536,131072,262144,524288,1048576,2097152,4194304,8388608,16777216,33554432,67108864,134217728,268435456,536870912,1073741824,2147483648,4294967296}'::int8[]))
$$;

-- The element each one-sample cell of `stats` implies (HdrHistogram's bin of
-- the sample, as `bin_key` in Rust: values past an hour in the last bin).
create function prober_block_implied(stats int8[], sums int8[]) returns setof int8
language sql immutable parallel safe as $$
    select ((e >> 48) << 48) | (prober_key_of(least(v, 3600000000)) << 32) | 1
    from unnest(stats, sums) as u(e, v)
    where (e >> 24) & 16777215 = 1
$$;

-- `bins` without the elements its cells imply (what a block stores).
create function prober_block_slim(bins int8[], stats int8[], sums int8[]) returns int8[]
language sql immutable parallel safe as $$
    select coalesce(array_agg(e order by e), '{}')
    from (select unnest(bins) as e
          except all
          select prober_block_implied(stats, sums)) kept
$$;

-- A block's bins with the implied elements of the one-sample cells that have
-- no element in `bins` (a binary search in the sorted array: the cell's
-- elements lie between its lowest and highest possible element); `bins`
-- itself when there is none (a faster probe's blocks: nothing to sort).
create function prober_block_full(bins int8[], stats int8[], sums int8[]) returns int8[]
language sql immutable parallel safe as $$
    select case
        when not exists (select from unnest(stats) e
                         where (e >> 24) & 16777215 = 1
                           and width_bucket((((e >> 48) + 1) << 48) - 1, bins)
                               = width_bucket(((e >> 48) << 48) - 1, bins))
        then bins
        else (select coalesce(array_agg(e order by e), '{}')
              from (select unnest(bins) as e
                    union all
                    select ((e >> 48) << 48) | (prober_key_of(least(v, 3600000000)) << 32) | 1
                    from unnest(stats, sums) as u(e, v)
                    where (e >> 24) & 16777215 = 1
                      and width_bucket((((e >> 48) + 1) << 48) - 1, bins)
                          = width_bucket(((e >> 48) << 48) - 1, bins)) all_bins)
    end
$$;

-- The minute rows of one block (the tag taken off); a minute with counters
-- and no bins keeps an empty bins array. Each minute's elements are a slice
-- of the sorted arrays, found by binary search: no sort and no grouping of
-- the block's elements (PL/pgSQL for that). With `prober_block_full`
-- returning the bins as they are when nothing is implied, a day of a 1 s
-- probe's blocks reads in 136 ms instead of 296 when grouped in SQL, a 60 s
-- probe's in 25 ms instead of 32.
create function prober_block_minutes(block_hour timestamptz, block_bins int8[],
                                     block_stats int8[], block_sums int8[])
returns table (minute timestamptz, bins int8[], stats int8[], sums int8[])
language plpgsql immutable parallel safe as $$
declare
    fb constant int8[] := prober_block_full(block_bins, block_stats, block_sums);
    mask constant int8 := 72057594037927935;
    m int8;
    sl integer;
    sh integer;
    bl integer;
    bh integer;
begin
    for m in select distinct e >> 56 from unnest(block_stats) e order by 1 loop
        sl := width_bucket((m << 56) - 1, block_stats);
        sh := width_bucket(((m + 1) << 56) - 1, block_stats);
        bl := width_bucket((m << 56) - 1, fb);
        bh := width_bucket(((m + 1) << 56) - 1, fb);
        minute := block_hour + make_interval(mins => m::integer);
        bins := array(select e & mask from unnest(fb[bl + 1 : bh]) e);
        stats := array(select e & mask from unnest(block_stats[sl + 1 : sh]) e);
        sums := block_sums[sl + 1 : sh];
        return next;
    end loop;
end
$$;

create function prober_pack(through timestamptz) returns bigint
language plpgsql as $$
declare
    n_minutes bigint;
    n_runs bigint;
begin
    with moved as (
        delete from hist_minute where minute < through
        returning probe_id, location_id, minute, bins, stats, sums
    ), tagged as (
        select probe_id, location_id, date_trunc('hour', minute, 'UTC') as hour,
               extract(minute from minute at time zone 'UTC')::int8 << 56 as tag,
               bins, stats, sums
        from moved
    ), b as (
        select probe_id, location_id, hour, array_agg(tag | e order by tag | e) as bins
        from tagged, unnest(tagged.bins) e group by 1, 2, 3
    ), s as (
        select probe_id, location_id, hour, array_agg(tag | e order by tag | e) as stats,
               array_agg(v order by tag | e) as sums
        from tagged, unnest(tagged.stats, tagged.sums) as u(e, v) group by 1, 2, 3
    )
    insert into hist_minute_block as h (probe_id, location_id, hour, bins, stats, sums)
    select probe_id, location_id, hour, prober_block_slim(coalesce(b.bins, '{}'), s.stats, s.sums),
           s.stats, s.sums
    from s left join b using (probe_id, location_id, hour)
    order by 1, 2, 3
    on conflict (probe_id, location_id, hour) do update
    set bins = prober_block_slim(
            prober_bins_add(prober_block_full(h.bins, h.stats, h.sums),
                            prober_block_full(excluded.bins, excluded.stats, excluded.sums)),
            prober_stats_add(h.stats, excluded.stats),
            prober_sums_add(h.stats, h.sums, excluded.stats, excluded.sums)),
        stats = prober_stats_add(h.stats, excluded.stats),
        sums = prober_sums_add(h.stats, h.sums, excluded.stats, excluded.sums);
    get diagnostics n_minutes = row_count;

    with moved as (
        delete from runs where scheduled_at < through returning *
    )
    insert into run_blocks as b (probe_id, location_id, hour, run_id, scheduled_at, version_id,
                                 build_id, lateness_us, total_us, dns_us, connect_us, tls_us,
                                 first_byte_us, transfer_us, response_bytes, status_code,
                                 error_class, success, error_message, detail, trigger)
    select probe_id, location_id, date_trunc('hour', scheduled_at, 'UTC'),
           array_agg(run_id order by scheduled_at, run_id),
           array_agg(scheduled_at order by scheduled_at, run_id),
           array_agg(version_id order by scheduled_at, run_id),
           array_agg(build_id order by scheduled_at, run_id),
           array_agg(lateness_us order by scheduled_at, run_id),
           array_agg(total_us order by scheduled_at, run_id),
           array_agg(dns_us order by scheduled_at, run_id),
           array_agg(connect_us order by scheduled_at, run_id),
           array_agg(tls_us order by scheduled_at, run_id),
           array_agg(first_byte_us order by scheduled_at, run_id),
           array_agg(transfer_us order by scheduled_at, run_id),
           array_agg(response_bytes order by scheduled_at, run_id),
           array_agg(status_code order by scheduled_at, run_id),
           array_agg(error_class order by scheduled_at, run_id),
           array_agg(success order by scheduled_at, run_id),
           array_agg(error_message order by scheduled_at, run_id),
           array_agg(detail order by scheduled_at, run_id),
           array_agg(trigger order by scheduled_at, run_id)
    from moved
    group by 1, 2, 3
    order by 1, 2, 3
    on conflict (probe_id, location_id, hour) do update
    set run_id = b.run_id || excluded.run_id,
        scheduled_at = b.scheduled_at || excluded.scheduled_at,
        version_id = b.version_id || excluded.version_id,
        build_id = b.build_id || excluded.build_id,
        lateness_us = b.lateness_us || excluded.lateness_us,
        total_us = b.total_us || excluded.total_us,
        dns_us = b.dns_us || excluded.dns_us,
        connect_us = b.connect_us || excluded.connect_us,
        tls_us = b.tls_us || excluded.tls_us,
        first_byte_us = b.first_byte_us || excluded.first_byte_us,
        transfer_us = b.transfer_us || excluded.transfer_us,
        response_bytes = b.response_bytes || excluded.response_bytes,
        status_code = b.status_code || excluded.status_code,
        error_class = b.error_class || excluded.error_class,
        success = b.success || excluded.success,
        error_message = b.error_message || excluded.error_message,
        detail = b.detail || excluded.detail,
        trigger = b.trigger || excluded.trigger;
    get diagnostics n_runs = row_count;

    update hist_mark set packed_through = greatest(packed_through, through);
    return n_minutes + n_runs;
end
$$;

-- Runs (the columns of `runs`, in its order) scheduled in [from_at, to_at].
create function prober_run_rows(from_at timestamptz, to_at timestamptz)
returns setof runs
language sql stable parallel safe as $$
    select r.* from runs r where r.scheduled_at between from_at and to_at
    union all
    select u.scheduled_at, u.run_id, b.probe_id, u.version_id, b.location_id, u.build_id,
           u.lateness_us, u.total_us, u.dns_us, u.connect_us, u.tls_us, u.first_byte_us,
           u.transfer_us, u.response_bytes, u.status_code, u.error_class, u.success,
           u.error_message, u.detail, u.trigger
    from run_blocks b,
         unnest(b.run_id, b.scheduled_at, b.version_id, b.build_id, b.lateness_us, b.total_us,
                b.dns_us, b.connect_us, b.tls_us, b.first_byte_us, b.transfer_us,
                b.response_bytes, b.status_code, b.error_class, b.success, b.error_message,
                b.detail, b.trigger)
         as u(run_id, scheduled_at, version_id, build_id, lateness_us, total_us, dns_us,
              connect_us, tls_us, first_byte_us, transfer_us, response_bytes, status_code,
              error_class, success, error_message, detail, trigger)
    where b.hour >= date_trunc('hour', from_at, 'UTC') and b.hour <= to_at
      and u.scheduled_at between from_at and to_at
$$;

-- Minute rows (the columns of `hist_minute`) in [from_at, to_at]: stored,
-- pending, packed, and what a previous release wrote to the v1 tables.
create function prober_minutes(from_at timestamptz, to_at timestamptz)
returns setof hist_minute
language sql stable parallel safe as $$
    select m.* from hist_minute m where m.minute between from_at and to_at
    union all
    select p.probe_id, p.location_id, p.minute, p.bins, p.stats, p.sums
    from hist_pending p where p.minute between from_at and to_at
    union all
    select b.probe_id, b.location_id, k.minute, k.bins, k.stats, k.sums
    from hist_minute_block b, prober_block_minutes(b.hour, b.bins, b.stats, b.sums) k
    where b.hour >= date_trunc('hour', from_at, 'UTC') and b.hour <= to_at
      and k.minute between from_at and to_at
    union all
    select v.probe_id, v.location_id, v.minute, v.bins, v.stats, v.sums
    from v1_minute_rows v where v.minute between from_at and to_at
$$;

-- `all_hist` at one resolution, `t` in [from_at, to_at]: what the dashboards
-- read, `prober_hist(prober_resolution($__interval_ms), $__timeFrom(), $__timeTo())`.
create function prober_hist(res text, from_at timestamptz, to_at timestamptz)
returns table (resolution text, t timestamptz, probe_id integer, location_id smallint,
               bins int8[], stats int8[], sums int8[])
language sql stable parallel safe as $$
    select 'minute'::text, m.minute, m.probe_id, m.location_id, m.bins, m.stats, m.sums
    from prober_minutes(from_at, to_at) m where res = 'minute'
    union all
    select 'hour', h.hour, h.probe_id, h.location_id, h.bins, h.stats, h.sums
    from hist_hour_live h where res = 'hour' and h.hour between from_at and to_at
    union all
    select 'day', d.day, d.probe_id, d.location_id, d.bins, d.stats, d.sums
    from hist_day_live d where res = 'day' and d.day between from_at and to_at
$$;

create or replace view hist_minute_live as
select probe_id, location_id, minute, bins, stats, sums
from prober_minutes('-infinity', 'infinity');

create or replace view runs_view as
select r.run_id, p.name as probe, l.name as location, v.version, b.version as build,
       r.scheduled_at, r.scheduled_at + r.lateness_us * interval '1 microsecond' as started_at,
       r.lateness_us, r.success, e.name as error_class, r.error_message, r.status_code,
       r.dns_us, r.connect_us, r.tls_us, r.first_byte_us, r.transfer_us, r.total_us,
       r.response_bytes, r.detail,
       case r.trigger when 1 then 'api' else 'schedule' end as trigger
from prober_run_rows('-infinity', 'infinity') r
join probes p on p.id = r.probe_id
join probe_versions v on v.id = r.version_id
join locations l on l.id = r.location_id
join builds b on b.id = r.build_id
left join error_classes e on e.id = r.error_class;
