-- Helpers for the Grafana dashboards (dashboards/*.json). Every panel's SQL is
-- run against a seeded database by tests/tests/it/dashboards.rs, so a change
-- here or in the tables below that breaks a panel fails the tests.

-- The coarsest stored resolution whose step divides a Grafana interval given in
-- milliseconds (`$__interval_ms`): the API's rule (`Resolution::for_step`). With
-- a panel's minimum interval at 1m, a range long enough for a 1h (1d) interval
-- reads the hour (day) tables.
create function prober_resolution(interval_ms bigint) returns text
language sql immutable parallel safe as $$
    select case
        when interval_ms >= 86400000 and interval_ms % 86400000 = 0 then 'day'
        when interval_ms >= 3600000 and interval_ms % 3600000 = 0 then 'hour'
        else 'minute'
    end
$$;

-- The bins of the three resolutions as one relation, with the bucket's start as
-- `t`. A query that fixes `resolution` (e.g. `resolution = prober_resolution(60000)`,
-- folded to a constant when planned) reads one table only: the other branches
-- of the union are pruned.
create view all_bins as
select 'minute'::text as resolution, minute as t, probe_id, location_id, phase,
       bin_lo_us, bin_hi_us, count
from minute_bins
union all
select 'hour', hour, probe_id, location_id, phase, bin_lo_us, bin_hi_us, count
from hour_bins
union all
select 'day', day, probe_id, location_id, phase, bin_lo_us, bin_hi_us, count
from day_bins;

-- The counters of the three resolutions, the same way.
create view all_counters as
select 'minute'::text as resolution, minute as t, probe_id, location_id, phase,
       runs, failures, sum_us
from minute_counters
union all
select 'hour', hour, probe_id, location_id, phase, runs, failures, sum_us
from hour_counters
union all
select 'day', day, probe_id, location_id, phase, runs, failures, sum_us
from day_counters;

-- Each probe with the labels of its newest version (what dashboards filter on);
-- a probe without a `team` or `service` label shows `none`.
create view probe_info as
select distinct on (p.id)
       p.id as probe_id, p.name as probe,
       coalesce(v.definition -> 'labels' ->> 'team', 'none') as team,
       coalesce(v.definition -> 'labels' ->> 'service', 'none') as service,
       v.definition ->> 'runbook' as runbook,
       v.version, v.first_seen_at as version_seen_at
from probes p
join probe_versions v on v.probe_id = p.id
order by p.id, v.id desc;
