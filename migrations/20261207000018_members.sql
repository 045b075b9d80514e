-- Members (issue 18, item 2): the replicas of one location share its probes.
-- Each renews its row every few seconds; the live rows (expires_at in the
-- future) are the members, and each probe is run by one of them, chosen by
-- rendezvous hashing over the member names (daemon/members.rs). A replica
-- killed, frozen or cut off from Postgres drops out when its row expires;
-- a clean shutdown deletes it at once.
--
-- Times are Postgres's (`now()`), so the replicas' clocks need not agree.
-- Small and read by location: not distributed (a Citus reference table).
create table members (
    location   text not null,
    member     text not null,
    expires_at timestamptz not null,
    primary key (location, member)
);
