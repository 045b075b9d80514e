-- Step outcomes, attempts and kind-specific facts of a run (scenarios, retried
-- runs, tcp/dns/tls/grpc). Null for a plain HTTP run, so those rows cost nothing more.
alter table runs add column detail jsonb;

-- Phases 100–199 hold the total time of step 0–99 of a scenario, in the order
-- the steps are defined. The API maps `step:<name>` to the id from the probe's definition.
insert into phases (id, name)
select 100 + i, 'step_' || i from generate_series(0, 99) as i;

create or replace view runs_view as
select r.run_id, p.name as probe, l.name as location, v.version, b.version as build,
       r.scheduled_at, r.scheduled_at + r.lateness_us * interval '1 microsecond' as started_at,
       r.lateness_us, r.success, e.name as error_class, r.error_message, r.status_code,
       r.dns_us, r.connect_us, r.tls_us, r.first_byte_us, r.transfer_us, r.total_us,
       r.response_bytes, r.detail
from runs r
join probes p on p.id = r.probe_id
join probe_versions v on v.id = r.version_id
join locations l on l.id = r.location_id
join builds b on b.id = r.build_id
left join error_classes e on e.id = r.error_class;
