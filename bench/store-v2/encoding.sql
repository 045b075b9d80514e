-- Store v2 (issue 16): today's layout against array and bytea encodings of the minute/hour histograms.
--
--   A  today's shape: one row per (probe, location, phase, period, bin) + one counter row per phase
--   B  one row per (probe, location, period): parallel arrays
--        phases int2[]   phase ids present, ascending
--        ctr    int8[]   5 per phase, in phase order: runs, failures, sum_us, min_us, max_us
--        bin_key int4[]  (phase << 16) | HdrHistogram bin index, ascending
--        bin_n  int4[]   count of each bin
--   C  one row per (probe, location, period): versioned bytea, LEB128 varints
--        0x01, then per phase (ascending): phase, runs, failures, sum_us, min_us,
--        max_us - min_us, nbins, then nbins x (bin index delta from previous, count)
--   B2, C2  "lean": the information today's store keeps and no more: bins, and per
--        phase failures and sum_us (runs = sum of the phase's bin counts; no min/max).
--        B2: bin_key int4[], bin_n int4[], sums int8[], failures int4[] (one per phase
--            present, in phase order); C2: 0x02, per phase: phase, failures, sum_us,
--            nbins, then the bins as in C.
--
-- Same synthetic samples for every layout. Run against an EMPTY scratch database:
--   psql -h 127.0.0.1 -U postgres -c 'create database prober_bench_encoding'
--   psql -h 127.0.0.1 -U postgres -d prober_bench_encoding -v ON_ERROR_STOP=1 -f bench/store-v2/encoding.sql
--   psql -h 127.0.0.1 -U postgres -c 'drop database prober_bench_encoding'
-- Sizes: 1,000 probes x 1 location x 6 phases; n60 (default 60) minutes at a 60 s
-- interval (1 run/minute), n10 (60) minutes at 10 s (6 runs/minute) and n1 (10) minutes
-- at 1 s (60 runs/minute). Override with -v n60=... -v n10=... -v n1=... -v probes=...

\set ON_ERROR_STOP 1
\if :{?n60} \else \set n60 60 \endif
\if :{?n10} \else \set n10 60 \endif
\if :{?n1} \else \set n1 10 \endif
\if :{?probes} \else \set probes 1000 \endif
\timing off
set client_min_messages = warning;
select setseed(0.16);

-- === HdrHistogram bins: 1 us .. 1 h, 2 significant digits (as prober/src/results/hist.rs) ===
-- sub_bucket_count 256, half 128, unit magnitude 0, 25 buckets: indexes 0..3327 (fit int2).
create function hdr_index(v bigint) returns int language sql immutable parallel safe as $$
    select (((b + 1) << 7) + (x >> b) - 128)::int
    from (select least(greatest(v, 0), 3600000000) as x) c,
         lateral (select length(ltrim(((x | 255)::bit(64))::text, '0')) - 1 - 7 as b) d
$$;
create function hdr_lo(idx int) returns bigint language sql immutable parallel safe as $$
    select case when idx < 256 then idx::bigint
                else ((idx & 127) + 128)::bigint << ((idx >> 7) - 1) end
$$;
create function hdr_hi(idx int) returns bigint language sql immutable parallel safe as $$
    select case when idx < 256 then idx::bigint
                else hdr_lo(idx) + (1::bigint << ((idx >> 7) - 1)) - 1 end
$$;

-- today's quantile rule (migrations/20261126000001_initial.sql), copied verbatim
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

-- sanity: bins agree with HdrHistogram's lowest/highest_equivalent on a few values
do $$
declare v bigint; i int;
begin
    foreach v in array array[1, 99, 255, 256, 257, 511, 512, 1000, 123456, 50000000, 3600000000] loop
        i := hdr_index(v);
        if not (hdr_lo(i) <= v and v <= hdr_hi(i)) then
            raise exception 'bin % of % is %..%', i, v, hdr_lo(i), hdr_hi(i);
        end if;
    end loop;
    if hdr_index(3600000000) > 3327 then raise exception 'index range'; end if;
    if (hdr_lo(hdr_index(1000)), hdr_hi(hdr_index(1000))) <> (1000::bigint, 1003::bigint) then
        raise exception 'bin of 1000 is %..%', hdr_lo(hdr_index(1000)), hdr_hi(hdr_index(1000));
    end if;
end $$;

-- === varint (LEB128) encode / decode for layout C ===
create function varint(v bigint) returns bytea language plpgsql immutable strict parallel safe as $$
declare r bytea := ''::bytea;
begin
    loop
        if v < 128 then return r || set_byte('\x00'::bytea, 0, v::int); end if;
        r := r || set_byte('\x00'::bytea, 0, ((v & 127) | 128)::int);
        v := v >> 7;
    end loop;
end $$;

-- the bins of one phase (want) of an encoded histogram; parses past the other phases
create function c_bins(h bytea, want int) returns table (idx int, n bigint)
language plpgsql immutable strict parallel safe as $$
declare
    pos int := 1; len int := length(h); f bigint[]; v bigint; sh int; b int; k int; j int; nb bigint; cur int;
    nhdr int := case get_byte(h, 0) when 1 then 7 when 2 then 4 end;
begin
    if nhdr is null then raise exception 'unknown histogram version %', get_byte(h, 0); end if;
    while pos < len loop
        f := '{}';
        for k in 1..nhdr loop  -- v1: phase, runs, failures, sum, min, max-min, nbins; v2: phase, failures, sum, nbins
            v := 0; sh := 0;
            loop
                b := get_byte(h, pos); pos := pos + 1;
                v := v | ((b & 127)::bigint << sh);
                exit when b < 128;
                sh := sh + 7;
            end loop;
            f := f || v;
        end loop;
        nb := f[nhdr]; cur := 0;
        for j in 1..nb loop
            for k in 1..2 loop
                v := 0; sh := 0;
                loop
                    b := get_byte(h, pos); pos := pos + 1;
                    v := v | ((b & 127)::bigint << sh);
                    exit when b < 128;
                    sh := sh + 7;
                end loop;
                if k = 1 then cur := cur + v::int; else
                    if f[1] = want then idx := cur; n := v; return next; end if;
                end if;
            end loop;
        end loop;
        if f[1] > want then return; end if;  -- phases are ascending
    end loop;
end $$;

-- === synthetic samples ===
-- Per run, phases 1..5 lognormal around a per-probe median (probe scale 0.5x..5x of
-- dns 300 us, connect 800, tls 2.5 ms, first byte 15 ms, transfer 400 us), sigma 0.05,
-- with 3% outliers at sigma 0.5; phase 0 (total) = their sum; 1% of runs fail.
create function gen_samples(tbl text, minutes int, runs_per_min int, probes int) returns void
language plpgsql as $$
begin
    execute format($f$
        create unlogged table %1$I as
        with r as (
            select p as probe_id,
                   timestamptz '2026-11-30 00:00:00+00' + m * interval '1 minute' as minute,
                   rr, random() < 0.01 as failed, 0.5 + (p %% 10) * 0.5 as scale
            from generate_series(1, %2$s) p, generate_series(0, %3$s - 1) m,
                 generate_series(1, %4$s) rr
        ), ph as (
            select probe_id, minute, rr, failed, ph as phase,
                   greatest(1, round((array[300, 800, 2500, 15000, 400])[ph] * scale
                     * exp(case when random() < 0.03 then 0.5 else 0.05 end
                           * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()))))::bigint as us
            from r, generate_series(1, 5) ph
        )
        select probe_id, minute, phase::int2, us, failed from ph
        union all
        select probe_id, minute, 0::int2, sum(us)::bigint, bool_or(failed) from ph
        group by probe_id, minute, rr
    $f$, tbl, probes, minutes, runs_per_min);
    execute format('alter table %I add column idx int', tbl);
    execute format('update %I set idx = hdr_index(us)', tbl);
    execute format('analyze %I', tbl);
end $$;

-- === build layouts A, B, C for one case and resolution from a samples table ===
create function build(src text, sfx text, per text) returns void
language plpgsql as $$
declare
    pe text := case per when 'minute' then 'minute' else format('date_trunc(%L, minute, ''UTC'')', per) end;
begin
    -- per (probe, period, phase, bin) counts and per (probe, period, phase) counters
    execute format('create temp table tb as select probe_id, %s as t, phase, idx, count(*)::bigint as n
                    from %I group by 1, 2, 3, 4', pe, src);
    execute format('create temp table tc as select probe_id, %s as t, phase, count(*)::bigint as runs,
                    count(*) filter (where failed)::bigint as failures, sum(us)::bigint as sum_us,
                    min(us) as min_us, max(us) as max_us from %I group by 1, 2, 3', pe, src);

    -- A: today's DDL (minute_bins / minute_counters, not partitioned), rows in time order
    execute format($f$
        create table a_bins_%1$s (
            t timestamptz not null, probe_id integer not null, location_id smallint not null,
            phase smallint not null, bin_lo_us bigint not null, bin_hi_us bigint not null,
            count bigint not null,
            primary key (probe_id, phase, t, location_id, bin_lo_us));
        create index on a_bins_%1$s using brin (t);
        insert into a_bins_%1$s
        select t, probe_id, 1, phase, hdr_lo(idx), hdr_hi(idx), n from tb order by t, probe_id, phase, idx;
        create table a_ctr_%1$s (
            t timestamptz not null, probe_id integer not null, location_id smallint not null,
            phase smallint not null, runs bigint not null, failures bigint not null,
            sum_us bigint not null,
            primary key (probe_id, phase, t, location_id));
        create index on a_ctr_%1$s using brin (t);
        insert into a_ctr_%1$s
        select t, probe_id, 1, phase, runs, failures, sum_us from tc order by t, probe_id, phase;
    $f$, sfx);

    -- B: parallel arrays, one row per (probe, location, period)
    execute format($f$
        create table b_%1$s (
            probe_id integer not null, location_id smallint not null, t timestamptz not null,
            phases int2[] not null, ctr int8[] not null, bin_key int4[] not null, bin_n int4[] not null,
            primary key (probe_id, location_id, t));
        insert into b_%1$s
        with bk as (
            select probe_id, t, array_agg((phase::int << 16) | idx order by phase, idx) as k,
                   array_agg(n::int order by phase, idx) as n
            from tb group by 1, 2
        ), cc as (
            select probe_id, t, array_agg(phase order by phase) as ph,
                   array_agg(x order by phase, j) as ctr
            from (select probe_id, t, phase, x, j
                  from tc, unnest(array[runs, failures, sum_us, min_us, max_us]) with ordinality u(x, j)) z
            group by 1, 2
        )
        select cc.probe_id, 1, cc.t, cc.ph, cc.ctr, bk.k, bk.n
        from cc join bk using (probe_id, t) order by cc.t, cc.probe_id;
    $f$, sfx);

    -- C: versioned bytea, varint + delta
    execute format($f$
        create table c_%1$s (
            probe_id integer not null, location_id smallint not null, t timestamptz not null,
            h bytea not null,
            primary key (probe_id, location_id, t));
        insert into c_%1$s
        with d0 as (
            select probe_id, t, phase, idx, n,
                   idx - coalesce(lag(idx) over (partition by probe_id, t, phase order by idx), 0) as delta
            from tb
        ), d as (
            select probe_id, t, phase, count(*) as nb,
                   string_agg(varint(delta) || varint(n), ''::bytea order by idx) as s
            from d0 group by 1, 2, 3
        ), seg as (
            select d.probe_id, d.t, d.phase,
                   varint(d.phase) || varint(c.runs) || varint(c.failures) || varint(c.sum_us)
                   || varint(c.min_us) || varint(c.max_us - c.min_us) || varint(d.nb) || d.s as s
            from d join tc c using (probe_id, t, phase)
        )
        select probe_id, 1, t, '\x01'::bytea || string_agg(s, ''::bytea order by phase)
        from seg group by probe_id, t order by t, probe_id;
    $f$, sfx);

    -- B2: lean arrays
    execute format($f$
        create table b2_%1$s (
            probe_id integer not null, location_id smallint not null, t timestamptz not null,
            bin_key int4[] not null, bin_n int4[] not null, sums int8[] not null, failures int4[] not null,
            primary key (probe_id, location_id, t));
        insert into b2_%1$s
        with bk as (
            select probe_id, t, array_agg((phase::int << 16) | idx order by phase, idx) as k,
                   array_agg(n::int order by phase, idx) as n
            from tb group by 1, 2
        ), cc as (
            select probe_id, t, array_agg(sum_us order by phase) as sums,
                   array_agg(failures::int order by phase) as failures
            from tc group by 1, 2
        )
        select cc.probe_id, 1, cc.t, bk.k, bk.n, cc.sums, cc.failures
        from cc join bk using (probe_id, t) order by cc.t, cc.probe_id;
    $f$, sfx);

    -- C2: lean bytea
    execute format($f$
        create table c2_%1$s (
            probe_id integer not null, location_id smallint not null, t timestamptz not null,
            h bytea not null,
            primary key (probe_id, location_id, t));
        insert into c2_%1$s
        with d0 as (
            select probe_id, t, phase, idx, n,
                   idx - coalesce(lag(idx) over (partition by probe_id, t, phase order by idx), 0) as delta
            from tb
        ), d as (
            select probe_id, t, phase, count(*) as nb,
                   string_agg(varint(delta) || varint(n), ''::bytea order by idx) as s
            from d0 group by 1, 2, 3
        ), seg as (
            select d.probe_id, d.t, d.phase,
                   varint(d.phase) || varint(c.failures) || varint(c.sum_us) || varint(d.nb) || d.s as s
            from d join tc c using (probe_id, t, phase)
        )
        select probe_id, 1, t, '\x02'::bytea || string_agg(s, ''::bytea order by phase)
        from seg group by probe_id, t order by t, probe_id;
    $f$, sfx);
    drop table tb; drop table tc;
end $$;

-- === generate and build ===
\echo generating samples: :probes probes, :n60 minutes at 60 s, :n10 minutes at 10 s, :n1 minutes at 1 s
select gen_samples('s_60s', :n60, 1, :probes);
select gen_samples('s_10s', :n10, 6, :probes);
select gen_samples('s_1s', :n1, 60, :probes);

create table cases (sfx text primary key, interval_s int, minutes int, runs bigint, t0 timestamptz, t1 timestamptz);
insert into cases values
    ('60s', 60, :n60, :probes::bigint * :n60, '2026-11-30 00:00+00', timestamptz '2026-11-30 00:00+00' + :n60 * interval '1 minute'),
    ('10s', 10, :n10, :probes::bigint * :n10 * 6, '2026-11-30 00:00+00', timestamptz '2026-11-30 00:00+00' + :n10 * interval '1 minute'),
    ('1s', 1, :n1, :probes::bigint * :n1 * 60, '2026-11-30 00:00+00', timestamptz '2026-11-30 00:00+00' + :n1 * interval '1 minute');

-- distinct bins per (probe, minute, phase) and per (probe, hour, phase)
create table bin_stats as
select '60s' as sfx, 'minute' as per, avg(nb) as avg_bins, max(nb) as max_bins
from (select count(distinct idx) nb from s_60s group by probe_id, minute, phase) x
union all
select '10s', 'minute', avg(nb), max(nb)
from (select count(distinct idx) nb from s_10s group by probe_id, minute, phase) x
union all
select '10s', 'hour', avg(nb), max(nb)
from (select count(distinct idx) nb from s_10s group by probe_id, date_trunc('hour', minute, 'UTC'), phase) x
union all
select '1s', 'minute', avg(nb), max(nb)
from (select count(distinct idx) nb from s_1s group by probe_id, minute, phase) x
union all
select '60s', 'hour', avg(nb), max(nb)
from (select count(distinct idx) nb from s_60s group by probe_id, date_trunc('hour', minute, 'UTC'), phase) x
union all
select '1s', 'hour', avg(nb), max(nb)
from (select count(distinct idx) nb from s_1s group by probe_id, date_trunc('hour', minute, 'UTC'), phase) x;

\echo building layouts
select build('s_60s', '60s', 'minute');
select build('s_60s', '60s_hour', 'hour');
select build('s_10s', '10s', 'minute');
select build('s_10s', '10s_hour', 'hour');
select build('s_1s', '1s', 'minute');
select build('s_1s', '1s_hour', 'hour');
drop table s_60s, s_10s, s_1s;
vacuum analyze;

-- === sizes ===
-- heap (main fork, FSM, VM), TOAST (table + index) and indexes of every table of a layout
create table sizes as
with t as (
    select c.relname, pg_total_relation_size(c.oid) as total,
           pg_relation_size(c.oid, 'main') as heap_main,
           pg_table_size(c.oid) - pg_relation_size(c.oid, 'main') - coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0) as heap_fsm_vm,
           coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0) as toast,
           pg_indexes_size(c.oid) as indexes,
           c.reltuples::bigint as row_count
    from pg_class c
    where c.relkind = 'r' and c.relnamespace = 'public'::regnamespace
      and c.relname ~ '^(a_bins|a_ctr|b2|c2|b|c)_'
)
select upper(substring(relname from '^(a|b2|c2|b|c)_')) as layout,
       regexp_replace(relname, '^(a_bins|a_ctr|b2|c2|b|c)_', '') as sfx,
       sum(total) as total, sum(heap_main) as heap_main, sum(heap_fsm_vm) as fsm_vm,
       sum(toast) as toast, sum(indexes) as indexes, sum(row_count) as row_count
from t group by 1, 2;

\echo
\echo distinct bins per phase (synthetic data)
select sfx as "case", per, round(avg_bins, 1) as avg_bins_per_phase, max_bins from bin_stats;

\echo bytes on disk per run represented (pg_total_relation_size: heap + fsm/vm + TOAST + indexes)
select s.layout, s.sfx as "case/resolution", s.row_count as rows,
       round(s.row_count::numeric / c.runs, 3) as rows_per_run,
       pg_size_pretty(s.total) as total,
       round(s.total::numeric / c.runs, 1) as bytes_per_run,
       round((s.total - s.fsm_vm)::numeric / c.runs, 1) as bytes_per_run_no_fsm_vm,
       round(s.heap_main::numeric / c.runs, 1) as heap_per_run,
       round(s.indexes::numeric / c.runs, 1) as index_per_run,
       s.toast
from sizes s join cases c on c.sfx = split_part(s.sfx, '_', 1)
order by c.interval_s desc, s.sfx, array_position(array['A', 'B', 'B2', 'C', 'C2'], s.layout);

\echo average stored row (pg_column_size of the whole row: data + varlena headers, before the 24 B tuple header, line pointer and index entry)
create function avg_width(tbl text) returns numeric language plpgsql as $$
declare r numeric;
begin
    execute format('select round(avg(pg_column_size(x.*))) from %I x', tbl) into r;
    return r;
end $$;
create function avg_bytea(tbl text) returns numeric language plpgsql as $$
declare r numeric;
begin
    execute format('select round(avg(pg_column_size(x.h)), 1) from %I x', tbl) into r;
    return r;
end $$;
select c as "case/resolution", avg_width('a_bins_' || c) as a_bin_row, avg_width('a_ctr_' || c) as a_ctr_row,
       avg_width('b_' || c) as b_row, avg_width('c_' || c) as c_row,
       avg_width('b2_' || c) as b2_row, avg_width('c2_' || c) as c2_row,
       avg_bytea('c_' || c) as c_bytea, avg_bytea('c2_' || c) as c2_bytea
from unnest(array['60s', '60s_hour', '10s', '10s_hour', '1s', '1s_hour']) c;

-- === merge + p95 queries (phase 0 = total, over every stored minute) ===
-- {t} = table suffix, {w} = time window. The same rule as prober_quantile everywhere:
-- merge counts per bin, order by bin, first bin whose running count reaches ceil(q * total).
create table queries (layout text, scope text, sql text);
insert into queries values
('A', 'one probe', $q$
select prober_quantile(0.95, array_agg(hi order by hi), array_agg(n order by hi))
from (select bin_hi_us as hi, sum(count)::bigint as n from a_bins_{t}
      where probe_id = 7 and phase = 0 and {w} group by 1) b $q$),
('A', 'all probes', $q$
select probe_id, prober_quantile(0.95, array_agg(hi order by hi), array_agg(n order by hi))
from (select probe_id, bin_hi_us as hi, sum(count)::bigint as n from a_bins_{t}
      where phase = 0 and {w} group by 1, 2) b
group by probe_id $q$),
('B', 'one probe', $q$
select prober_quantile(0.95, array_agg(hdr_hi(i) order by i), array_agg(n order by i))
from (select u.k & 65535 as i, sum(u.n)::bigint as n
      from b_{t} x, unnest(x.bin_key, x.bin_n) as u(k, n)
      where x.probe_id = 7 and x.location_id = 1 and {w} and u.k < 65536 group by 1) b $q$),
('B', 'all probes', $q$
select probe_id, prober_quantile(0.95, array_agg(hdr_hi(i) order by i), array_agg(n order by i))
from (select x.probe_id, u.k & 65535 as i, sum(u.n)::bigint as n
      from b_{t} x, unnest(x.bin_key, x.bin_n) as u(k, n)
      where {w} and u.k < 65536 group by 1, 2) b
group by probe_id $q$),
('C', 'one probe', $q$
select prober_quantile(0.95, array_agg(hdr_hi(i) order by i), array_agg(n order by i))
from (select d.idx as i, sum(d.n)::bigint as n
      from c_{t} x, c_bins(x.h, 0) d
      where x.probe_id = 7 and x.location_id = 1 and {w} group by 1) b $q$),
('C', 'all probes', $q$
select probe_id, prober_quantile(0.95, array_agg(hdr_hi(i) order by i), array_agg(n order by i))
from (select x.probe_id, d.idx as i, sum(d.n)::bigint as n
      from c_{t} x, c_bins(x.h, 0) d
      where {w} group by 1, 2) b
group by probe_id $q$);
insert into queries
select case layout when 'B' then 'B2' else 'C2' end, scope,
       replace(replace(sql, 'from b_{t}', 'from b2_{t}'), 'from c_{t}', 'from c2_{t}')
from queries where layout in ('B', 'C');

create function q_text(layout text, scope text, t text) returns text language sql as $$
    select replace(replace(q.sql, '{t}', t), '{w}',
        format('t >= %L and t < %L', c.t0, c.t1))
    from queries q, cases c
    where q.layout = $1 and q.scope = $2 and c.sfx = split_part($3, '_', 1)
$$;

-- exactness across layouts: every probe's p95 (and p50, p99 via the same SQL) agrees
do $$
declare t text; l text; diff bigint; q text;
begin
    foreach t in array array['60s', '60s_hour', '10s', '10s_hour', '1s', '1s_hour'] loop
        foreach l in array array['B', 'C', 'B2', 'C2'] loop
            execute format('select count(*) from ((%s) except (%s)) z',
                           q_text('A', 'all probes', t), q_text(l, 'all probes', t)) into diff;
            if diff <> 0 then raise exception 'layout % differs from A on % (% probes)', l, t, diff; end if;
        end loop;
    end loop;
end $$;

-- warm timings: one run to warm the cache, then reps runs; median and min in ms
create table times (layout text, scope text, t text, ms float8[]);
create function time_it(layout text, scope text, t text, reps int) returns void language plpgsql as $$
declare q text := q_text(layout, scope, t); t0 timestamptz; ms float8[] := '{}'; i int;
begin
    execute q;
    for i in 1..reps loop
        t0 := clock_timestamp();
        execute q;
        ms := ms || extract(epoch from clock_timestamp() - t0)::float8 * 1000;
    end loop;
    insert into times values (layout, scope, t, ms);
end $$;

\echo timing merge + p95 queries
select time_it(l, s, t, case s when 'one probe' then 20 else 3 end)
from unnest(array['A', 'B', 'C', 'B2', 'C2']) l, unnest(array['one probe', 'all probes']) s,
     unnest(array['60s', '60s_hour', '10s', '10s_hour', '1s', '1s_hour']) t;

\echo merge + p95 of phase total over every stored period (warm; ms)
select t as "case/resolution", scope, layout,
       (select round(percentile_cont(0.5) within group (order by x)::numeric, 2) from unnest(ms) x) as median_ms,
       (select round(min(x)::numeric, 2) from unnest(ms) x) as min_ms,
       cardinality(ms) as reps
from times order by array_position(array['60s', '60s_hour', '10s', '10s_hour', '1s', '1s_hour'], t), scope desc, layout;
