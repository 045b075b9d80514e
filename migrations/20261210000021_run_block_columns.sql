-- Run blocks, second encoding: what a packed run costs is mostly the bytes
-- pglz cannot compress. Measured on the blocks of `prober-bench --storage`
-- (20 probes at 10 s): the run id 9.0 B a run, `scheduled_at` 5.3 B, each
-- of the eight int4 columns (lateness, six timings, response bytes) ~3.9 B
-- (random low bits: pglz keeps an array only when it saves 25 %). New
-- blocks store:
--
-- 1. `run_id`: NULL where the id is the one the schedule derives from the
--    location, the probe and the tick (`run::tick_run_id` in Rust,
--    `prober_tick_run_id` below, checked equal when packed: a random id,
--    an API run's, is kept). A NULL element costs a bit.
-- 2. `at_us`: each run's `scheduled_at` as microseconds after the previous
--    run's (the first: after the hour), constant for a regular schedule.
-- 3. each int4 column as two int2 arrays, `<column>_hi` (bits 16-31, almost
--    always 0 or a slowly changing small number: compressed to nothing) and
--    `<column>_lo` (bits 0-15 less 32,768: 2 bytes instead of 4). NULLs stay
--    NULLs in both.
-- 4. every array column with storage MAIN and `toast_tuple_target` 128:
--    compressed inline even when the row is under 2 KB (a 60 s probe's hour),
--    moved out of line only when a row outgrows a page.
--
-- Blocks packed before this migration keep the first encoding (their new
-- columns NULL) until retention drops them; `prober_block_runs` reads both,
-- and a late run packed into an old block rewrites it in the new encoding.
-- A previous release (N-1) calls the same functions (`prober_pack`,
-- `prober_run_rows`) and gets these definitions; its writer's check for a
-- replayed run already packed (`t.run_id = any(b.run_id)`) does not see a
-- derived id, so a batch it replays more than an hour late is inserted
-- again: the pack keeps one run per key of `runs`, its samples are counted
-- twice (ARCHITECTURE.md "Run blocks, second encoding").

alter table run_blocks
    alter column scheduled_at drop not null,
    alter column lateness_us drop not null,
    alter column total_us drop not null,
    alter column dns_us drop not null,
    alter column connect_us drop not null,
    alter column tls_us drop not null,
    alter column first_byte_us drop not null,
    alter column transfer_us drop not null,
    alter column response_bytes drop not null,
    add column at_us int8[],
    add column lateness_hi int2[],
    add column lateness_lo int2[],
    add column total_hi int2[],
    add column total_lo int2[],
    add column dns_hi int2[],
    add column dns_lo int2[],
    add column connect_hi int2[],
    add column connect_lo int2[],
    add column tls_hi int2[],
    add column tls_lo int2[],
    add column first_byte_hi int2[],
    add column first_byte_lo int2[],
    add column transfer_hi int2[],
    add column transfer_lo int2[],
    add column response_bytes_hi int2[],
    add column response_bytes_lo int2[];

do $$
declare
    c text;
begin
    for c in select attname from pg_attribute
             where attrelid = 'run_blocks'::regclass and attnum > 0 and not attisdropped
               and atttypid in (select oid from pg_type where typcategory = 'A')
    loop
        execute format('alter table run_blocks alter column %I set storage main', c);
    end loop;
end
$$;
alter table run_blocks set (toast_tuple_target = 128);

-- The 8 bytes of `v`, least significant first (Rust's `to_le_bytes`).
create function prober_le8(v int8) returns bytea
language sql immutable parallel safe as $$
    select int8send(((v & 255) << 56) | (((v >> 8) & 255) << 48) | (((v >> 16) & 255) << 40)
                    | (((v >> 24) & 255) << 32) | (((v >> 32) & 255) << 24)
                    | (((v >> 40) & 255) << 16) | (((v >> 48) & 255) << 8) | ((v >> 56) & 255))
$$;

-- `run::tick_run_id(location, probe, at)`: a UUID v7 with the tick's
-- millisecond and the first 80 bits of SHA-256(len, location, len, probe,
-- nanoseconds), laid out as the uuid crate's `Builder::from_unix_timestamp_millis`
-- (4 version bits and 2 variant bits overwrite 6 of them). Tested equal to
-- Rust's in `tests/it/run_blocks.rs`. PL/pgSQL: ~3 µs a call, against ~10
-- for one SQL expression (the planner inlines it, but computes the hash once
-- per use) and ~85 for SQL with a subquery.
create function prober_tick_run_id(location text, probe text, at timestamptz) returns uuid
language plpgsql stable parallel safe as $$
declare
    us constant int8 := (extract(epoch from at) * 1000000)::int8;
    l constant bytea := convert_to(location, 'UTF8');
    p constant bytea := convert_to(probe, 'UTF8');
    -- Rust: `timestamp_nanos_opt().unwrap_or(i64::MAX)` (nanoseconds past
    -- 1677-2262 do not fit) and `u64::try_from(timestamp_millis()).unwrap_or(0)`.
    ns constant int8 := case when abs(us) <= 9223372036854775 then us * 1000
                             else 9223372036854775807 end;
    h bytea := substr(sha256(prober_le8(octet_length(l)) || l || prober_le8(octet_length(p)) || p
                             || prober_le8(ns)), 1, 10);
begin
    h := set_byte(set_byte(h, 0, 112 | (get_byte(h, 0) & 15)), 2, 128 | (get_byte(h, 2) & 63));
    return encode(substr(int8send(greatest(us, 0) / 1000), 3, 6) || h, 'hex')::uuid;
end
$$;

-- A packed run's derived id is computed from its probe's and location's
-- names, so they are kept as they are: a name is not changed, and a probe or
-- location with packed runs is not deleted (the dimension tables' rows are
-- never changed or deleted by the prober; this stops a manual fix-up from
-- rewriting history).
create function prober_keep_named() returns trigger
language plpgsql as $$
begin
    if tg_op = 'UPDATE' and new.name is distinct from old.name then
        raise exception 'the % "%" cannot be renamed to "%": packed runs derive their ids from its name',
            tg_table_name, old.name, new.name
            using hint = 'Add a probe or location under the new name instead; the old one keeps its history.';
    end if;
    if tg_op = 'DELETE' and exists (select 1 from run_blocks b
                                    where (tg_table_name = 'probes' and b.probe_id = old.id)
                                       or (tg_table_name = 'locations' and b.location_id = old.id)) then
        raise exception 'the % "%" cannot be deleted: it has packed runs, which derive their ids from its name',
            tg_table_name, old.name
            using hint = 'Retention drops packed runs; delete it once none are left.';
    end if;
    return case when tg_op = 'DELETE' then old else new end;
end
$$;
create trigger probes_keep_named before update of name or delete on probes
    for each row execute function prober_keep_named();
create trigger locations_keep_named before update of name or delete on locations
    for each row execute function prober_keep_named();

-- The two halves of an int4 column (NULL stays NULL) and back.
create function prober_hi(v int4) returns int2
language sql immutable parallel safe as $$ select (v >> 16)::int2 $$;
create function prober_lo(v int4) returns int2
language sql immutable parallel safe as $$ select ((v & 65535) - 32768)::int2 $$;
create function prober_int4(hi int2, lo int2) returns int4
language sql immutable parallel safe as $$ select (hi::int4 << 16) | (lo::int4 + 32768) $$;

-- The runs of one block, in either encoding (a block holds one of them; the
-- arrays of the other are NULL and unnest to nothing).
create function prober_block_runs(b run_blocks) returns setof runs
language sql stable parallel safe as $$
    select u.scheduled_at, u.run_id, b.probe_id, u.version_id, b.location_id, u.build_id,
           u.lateness_us, u.total_us, u.dns_us, u.connect_us, u.tls_us, u.first_byte_us,
           u.transfer_us, u.response_bytes, u.status_code, u.error_class, u.success,
           u.error_message, u.detail, u.trigger
    from unnest(b.run_id, b.scheduled_at, b.version_id, b.build_id, b.lateness_us, b.total_us,
                b.dns_us, b.connect_us, b.tls_us, b.first_byte_us, b.transfer_us,
                b.response_bytes, b.status_code, b.error_class, b.success, b.error_message,
                b.detail, b.trigger)
         as u(run_id, scheduled_at, version_id, build_id, lateness_us, total_us, dns_us,
              connect_us, tls_us, first_byte_us, transfer_us, response_bytes, status_code,
              error_class, success, error_message, detail, trigger)
    where b.at_us is null
    union all
    select w.at, coalesce(w.run_id, prober_tick_run_id(n.location, n.probe, w.at)),
           b.probe_id, w.version_id, b.location_id, w.build_id,
           prober_int4(w.lateness_hi, w.lateness_lo), prober_int4(w.total_hi, w.total_lo),
           prober_int4(w.dns_hi, w.dns_lo), prober_int4(w.connect_hi, w.connect_lo),
           prober_int4(w.tls_hi, w.tls_lo), prober_int4(w.first_byte_hi, w.first_byte_lo),
           prober_int4(w.transfer_hi, w.transfer_lo),
           prober_int4(w.response_bytes_hi, w.response_bytes_lo),
           w.status_code, w.error_class, w.success, w.error_message, w.detail, w.trigger
    from (select u.*, b.hour + interval '1 microsecond'
                 * (sum(u.d) over (order by u.i rows between unbounded preceding and current row))::float8
                 as at
          from unnest(b.run_id, b.at_us, b.version_id, b.build_id, b.lateness_hi, b.lateness_lo,
                      b.total_hi, b.total_lo, b.dns_hi, b.dns_lo, b.connect_hi, b.connect_lo,
                      b.tls_hi, b.tls_lo, b.first_byte_hi, b.first_byte_lo, b.transfer_hi,
                      b.transfer_lo, b.response_bytes_hi, b.response_bytes_lo, b.status_code,
                      b.error_class, b.success, b.error_message, b.detail, b.trigger)
               with ordinality
               as u(run_id, d, version_id, build_id, lateness_hi, lateness_lo, total_hi, total_lo,
                    dns_hi, dns_lo, connect_hi, connect_lo, tls_hi, tls_lo, first_byte_hi,
                    first_byte_lo, transfer_hi, transfer_lo, response_bytes_hi,
                    response_bytes_lo, status_code, error_class, success, error_message, detail,
                    trigger, i)) w,
         -- The names once per block (`offset 0`: not once per run).
         (select (select name from locations where id = b.location_id) as location,
                 (select name from probes where id = b.probe_id) as probe
          offset 0) n
    where b.at_us is not null
$$;

-- Whether block `b` holds the run `id` scheduled at `at` (the writer's check
-- for a batch replayed after its hour was packed): a stored id, or a NULL
-- element at `at` whose derived id is `id`. No run is decoded but the times.
create function prober_block_holds(b run_blocks, id uuid, at timestamptz) returns boolean
language sql stable parallel safe as $$
    select coalesce(id = any(b.run_id), false)
        or (exists (select 1
                    from (select u.run_id, b.hour + interval '1 microsecond'
                                 * (sum(u.d) over (order by u.i rows between unbounded preceding
                                                                 and current row))::float8 as t
                          from unnest(b.run_id, b.at_us) with ordinality as u(run_id, d, i)) w
                    where w.t = at and w.run_id is null)
            and id = prober_tick_run_id((select name from locations where id = b.location_id),
                                        (select name from probes where id = b.probe_id), at))
$$;

-- Runs (the columns of `runs`, in its order) scheduled in [from_at, to_at]:
-- rows and blocks. The probe and location come from the block's key, so a
-- condition on them reaches its index.
create or replace function prober_run_rows(from_at timestamptz, to_at timestamptz)
returns setof runs
language sql stable parallel safe as $$
    select r.* from runs r where r.scheduled_at between from_at and to_at
    union all
    select u.scheduled_at, u.run_id, b.probe_id, u.version_id, b.location_id, u.build_id,
           u.lateness_us, u.total_us, u.dns_us, u.connect_us, u.tls_us, u.first_byte_us,
           u.transfer_us, u.response_bytes, u.status_code, u.error_class, u.success,
           u.error_message, u.detail, u.trigger
    from run_blocks b, prober_block_runs(b) u
    where b.hour >= date_trunc('hour', from_at, 'UTC') and b.hour <= to_at
      and u.scheduled_at between from_at and to_at
$$;

create or replace function prober_pack(through timestamptz) returns bigint
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

    -- The runs before `through`, with those of the blocks they join (late
    -- runs), packed into one block per (probe, location, hour).
    with moved as (
        delete from runs where scheduled_at < through returning *
    ), touched as (
        delete from run_blocks b
        using (select distinct probe_id, location_id,
                               date_trunc('hour', scheduled_at, 'UTC') as hour
               from moved) m
        where b.probe_id = m.probe_id and b.location_id = m.location_id and b.hour = m.hour
        returning b
    ), every_run as (
        -- One of each (probe, scheduled_at, run_id), the key of `runs`: a
        -- run a previous release's writer inserted again after it was packed
        -- (it cannot see derived ids) is packed once.
        select distinct on (probe_id, location_id, scheduled_at, run_id) *
        from (select * from moved
              union all
              select u.* from touched t, prober_block_runs(t.b) u) a
    ), ordered as (
        select r.*, date_trunc('hour', r.scheduled_at, 'UTC') as hour,
               (extract(epoch from r.scheduled_at - lag(r.scheduled_at, 1,
                        date_trunc('hour', r.scheduled_at, 'UTC'))
                    over (partition by r.probe_id, r.location_id,
                                       date_trunc('hour', r.scheduled_at, 'UTC')
                          order by r.scheduled_at, r.run_id)) * 1000000)::int8 as d,
               case when r.run_id = prober_tick_run_id(l.name, p.name, r.scheduled_at)
                    then null else r.run_id end as kept_id
        from every_run r
        left join probes p on p.id = r.probe_id
        left join locations l on l.id = r.location_id
    )
    insert into run_blocks (probe_id, location_id, hour, run_id, at_us, version_id, build_id,
                            lateness_hi, lateness_lo, total_hi, total_lo, dns_hi, dns_lo,
                            connect_hi, connect_lo, tls_hi, tls_lo, first_byte_hi, first_byte_lo,
                            transfer_hi, transfer_lo, response_bytes_hi, response_bytes_lo,
                            status_code, error_class, success, error_message, detail, trigger)
    select probe_id, location_id, hour,
           array_agg(kept_id order by scheduled_at, run_id),
           array_agg(d order by scheduled_at, run_id),
           array_agg(version_id order by scheduled_at, run_id),
           array_agg(build_id order by scheduled_at, run_id),
           array_agg(prober_hi(lateness_us) order by scheduled_at, run_id),
           array_agg(prober_lo(lateness_us) order by scheduled_at, run_id),
           array_agg(prober_hi(total_us) order by scheduled_at, run_id),
           array_agg(prober_lo(total_us) order by scheduled_at, run_id),
           array_agg(prober_hi(dns_us) order by scheduled_at, run_id),
           array_agg(prober_lo(dns_us) order by scheduled_at, run_id),
           array_agg(prober_hi(connect_us) order by scheduled_at, run_id),
           array_agg(prober_lo(connect_us) order by scheduled_at, run_id),
           array_agg(prober_hi(tls_us) order by scheduled_at, run_id),
           array_agg(prober_lo(tls_us) order by scheduled_at, run_id),
           array_agg(prober_hi(first_byte_us) order by scheduled_at, run_id),
           array_agg(prober_lo(first_byte_us) order by scheduled_at, run_id),
           array_agg(prober_hi(transfer_us) order by scheduled_at, run_id),
           array_agg(prober_lo(transfer_us) order by scheduled_at, run_id),
           array_agg(prober_hi(response_bytes) order by scheduled_at, run_id),
           array_agg(prober_lo(response_bytes) order by scheduled_at, run_id),
           array_agg(status_code order by scheduled_at, run_id),
           array_agg(error_class order by scheduled_at, run_id),
           array_agg(success order by scheduled_at, run_id),
           array_agg(error_message order by scheduled_at, run_id),
           array_agg(detail order by scheduled_at, run_id),
           array_agg(trigger order by scheduled_at, run_id)
    from ordered
    group by 1, 2, 3
    order by 1, 2, 3;
    get diagnostics n_runs = row_count;

    update hist_mark set packed_through = greatest(packed_through, through);
    return n_minutes + n_runs;
end
$$;
