-- Hour and day histograms rolled up from minute data in bulk, not per run.
--
-- Until now every run upserted its samples into the minute, hour and day
-- tables in the statement that inserted it: about 24 rows per HTTP run, and
-- the hour and day upserts were over half of Postgres's cost per run
-- (BENCHMARKS.md). Now:
--
-- * `rollup_mark.rolled_through` (T, one row for the database): minute rows
--   before T are in the hour and day tables; minute rows at or after T are
--   not yet.
-- * The writer adds a run's samples to the minute tables, and to the hour and
--   day tables only when its minute is before T (a late run, e.g. one queued
--   while Postgres was away). It reads T `for share`, so it never interleaves
--   with a rollup.
-- * The rollup (any replica's writer, every minute) locks T `for update`, adds
--   the minute rows of [T, T') of every location to the hour tables in one
--   statement each, and moves T to T'. Each minute row is therefore counted in
--   the hour tables exactly once.
-- * The day tables are filled the same way from closed hours of the hour
--   tables, once an hour, with their own mark D (`day_rolled_through`): a
--   late run goes to the day tables itself when its minute is before D.
-- * Without a mark every run goes to all three tables at once (the previous
--   behaviour): a store used without the daemon's writer, and the daemon's
--   first minute. Every replica must run a version that knows the mark.
--
-- Readers use the `*_live` views: the rolled-up rows plus the minute rows not
-- yet rolled up, so answers are exact at every moment. Each view branch reads
-- one table with a condition on T, so the planner can push a reader's
-- conditions (probe, phase) into the minute tables' keys and skip their older
-- partitions.

create table rollup_mark (
    only_row           boolean primary key default true check (only_row),
    rolled_through     timestamptz not null,
    -- The day tables are filled from closed hours of the hour tables, once an
    -- hour (D, whole hours): hour rows before D are in the day tables.
    day_rolled_through timestamptz not null
);

-- The rollup reads minute rows by time across probes: BRIN keeps that cheap
-- (rows arrive in time order) at almost no cost per write.
create index minute_bins_minute on minute_bins using brin (minute);
create index minute_counters_minute on minute_counters using brin (minute);
create index hour_bins_hour on hour_bins using brin (hour);
create index hour_counters_hour on hour_counters using brin (hour);

create view hour_bins_live as
select hour, probe_id, location_id, phase, bin_lo_us, bin_hi_us, count
from hour_bins
union all
select date_trunc('hour', m.minute, 'UTC'), m.probe_id, m.location_id, m.phase,
       m.bin_lo_us, m.bin_hi_us, m.count
from minute_bins m
where m.minute >= (select rolled_through from rollup_mark);

-- Day = day rows + hour rows not yet in them + minute rows in neither.
create view day_bins_live as
select day, probe_id, location_id, phase, bin_lo_us, bin_hi_us, count
from day_bins
union all
select date_trunc('day', h.hour, 'UTC'), h.probe_id, h.location_id, h.phase,
       h.bin_lo_us, h.bin_hi_us, h.count
from hour_bins h
where h.hour >= (select day_rolled_through from rollup_mark)
union all
select date_trunc('day', m.minute, 'UTC'), m.probe_id, m.location_id, m.phase,
       m.bin_lo_us, m.bin_hi_us, m.count
from minute_bins m
where m.minute >= (select greatest(rolled_through, day_rolled_through) from rollup_mark);

create view hour_counters_live as
select hour, probe_id, location_id, phase, runs, failures, sum_us
from hour_counters
union all
select date_trunc('hour', m.minute, 'UTC'), m.probe_id, m.location_id, m.phase,
       m.runs, m.failures, m.sum_us
from minute_counters m
where m.minute >= (select rolled_through from rollup_mark);

create view day_counters_live as
select day, probe_id, location_id, phase, runs, failures, sum_us
from day_counters
union all
select date_trunc('day', h.hour, 'UTC'), h.probe_id, h.location_id, h.phase,
       h.runs, h.failures, h.sum_us
from hour_counters h
where h.hour >= (select day_rolled_through from rollup_mark)
union all
select date_trunc('day', m.minute, 'UTC'), m.probe_id, m.location_id, m.phase,
       m.runs, m.failures, m.sum_us
from minute_counters m
where m.minute >= (select greatest(rolled_through, day_rolled_through) from rollup_mark);

-- The dashboards' relations read the live views (same columns as before).
create or replace view all_bins as
select 'minute'::text as resolution, minute as t, probe_id, location_id, phase,
       bin_lo_us, bin_hi_us, count
from minute_bins
union all
select 'hour', hour, probe_id, location_id, phase, bin_lo_us, bin_hi_us, count
from hour_bins_live
union all
select 'day', day, probe_id, location_id, phase, bin_lo_us, bin_hi_us, count
from day_bins_live;

create or replace view all_counters as
select 'minute'::text as resolution, minute as t, probe_id, location_id, phase,
       runs, failures, sum_us
from minute_counters
union all
select 'hour', hour, probe_id, location_id, phase, runs, failures, sum_us
from hour_counters_live
union all
select 'day', day, probe_id, location_id, phase, runs, failures, sum_us
from day_counters_live;
