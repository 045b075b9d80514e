-- The audit log: every write request to the API (accepted and refused) and
-- every configuration change (a reload: applied or refused, from SIGHUP, a
-- file change or the API). Written best-effort by the daemon (a bounded
-- queue; entries it had to drop are counted on /metrics, never block the API).
-- Kept as long as raw runs (`retention.runs`).
create table audit_log (
    id          bigserial primary key,
    at          timestamptz not null default now(),
    -- the name of the token that authenticated the request; null: none, or a
    -- change that no request made (SIGHUP, a file change)
    token_name  text,
    -- the scope the request needed (read, run, admin); null: none
    scope       text,
    -- the HTTP method, or RELOAD for a configuration change
    method      text not null,
    -- the request path, or what triggered a reload (api, sighup, file-change)
    path        text not null,
    -- the peer address of the request; null for a change without a request
    remote_addr text,
    -- the HTTP status answered (for a reload: 200 applied, 422 refused)
    status      smallint not null,
    -- why a request was refused, or what a reload changed (capped at 2,000 characters)
    detail      text
);
create index audit_log_at on audit_log (at);
