-- Leases (issue 18, item 3): the replica that evaluates the rules over every
-- location (and runs the trend analysis) holds the `evaluator` lease: a row
-- renewed every few seconds, taken over by another replica once it expires.
-- Unlike the session advisory lock of earlier releases, a frozen or
-- partitioned holder loses it within its TTL, and `term` (raised at every
-- change of holder) fences it: a change it saves after losing the lease is
-- refused (`alert::persist::save`).
--
-- Times are Postgres's (`now()`), so the replicas' clocks need not agree.
-- Small and read by key: not distributed (a Citus reference table).
create table leases (
    name       text primary key,
    holder     text not null,
    term       bigint not null,
    expires_at timestamptz not null
);
