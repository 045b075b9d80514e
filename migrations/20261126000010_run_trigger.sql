-- What started a run: 0 = its schedule, 1 = the API (`POST /api/v1/probes/{name}/run`).
-- By default API runs are left out of the minute bins and counters (so of
-- availability, percentiles and SLO burn rates) and of alert state; the
-- setting `api.manual_runs_count: true` counts them. Existing rows were all scheduled.
alter table runs add column trigger smallint not null default 0;

-- runs_view as in migration 2, plus the trigger by name (a new last column).
create or replace view runs_view as
select r.run_id, p.name as probe, l.name as location, v.version, b.version as build,
       r.scheduled_at, r.scheduled_at + r.lateness_us * interval '1 microsecond' as started_at,
       r.lateness_us, r.success, e.name as error_class, r.error_message, r.status_code,
       r.dns_us, r.connect_us, r.tls_us, r.first_byte_us, r.transfer_us, r.total_us,
       r.response_bytes, r.detail,
       case r.trigger when 1 then 'api' else 'schedule' end as trigger
from runs r
join probes p on p.id = r.probe_id
join probe_versions v on v.id = r.version_id
join locations l on l.id = r.location_id
join builds b on b.id = r.build_id
left join error_classes e on e.id = r.error_class;
