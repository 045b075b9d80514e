-- Notification claims name their instance (issue 18, item 4): a daemon that
-- restarts on the same spool directory (which one process holds at a time)
-- makes its predecessor's unfinished claims due at once, instead of after
-- the claim's lease. NULL: claimed by a process without a spool, or by a
-- release before this one; such a claim waits out its lease as before.
alter table notifications add column claimed_by text;
