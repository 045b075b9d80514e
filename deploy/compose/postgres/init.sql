-- Runs once, when the compose stack's database is created: a read-only login
-- for Grafana (it can read every table, and write none).
create role grafana login password 'grafana' in role pg_read_all_data;
