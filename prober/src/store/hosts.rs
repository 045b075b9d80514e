//! Several Postgres hosts in one URL, as libpq writes them
//! (`postgres://user@db1:5432,db2:5432/prober?target_session_attrs=read-write`),
//! and the failover between them.
//!
//! sqlx connects to one host, so the store keeps one connect option per
//! host and points its pool at one of them. When a write fails, a check
//! (in the background, at most one at a time and one a second) connects to
//! each host in the URL's order and takes the first that answers and, with
//! `target_session_attrs=read-write` (or `primary`), is not read-only (a
//! standby, or a primary demoted by a switchover). New connections go
//! there; idle ones to the host left are closed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, PgPool};

/// Which session a host must offer (libpq's `target_session_attrs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAttrs {
    /// Any host that answers (libpq's default).
    Any,
    /// Only a host whose sessions can write (`transaction_read_only` off).
    ReadWrite,
}

/// A URL split per host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hosts {
    /// One URL per host, in order, each without `target_session_attrs`.
    pub urls: Vec<String>,
    pub attrs: SessionAttrs,
}

/// A URL's pieces as written: `scheme://userinfo@hostlist` then the tail
/// (path and query). `userinfo` keeps its `@`; empty when there is none.
pub(super) struct Parts<'a> {
    pub scheme: &'a str,
    pub userinfo: &'a str,
    pub hostlist: &'a str,
    pub tail: &'a str,
}

/// `url` cut into [`Parts`]; `None` without `://`.
pub(super) fn parts(url: &str) -> Option<Parts<'_>> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hostlist) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    Some(Parts {
        scheme,
        userinfo,
        hostlist,
        tail,
    })
}

/// Splits `url`'s comma-separated hosts into one URL each; reads and
/// removes `target_session_attrs`. A URL of one host comes back as it is
/// (without that parameter). The error says what is wrong, not the URL
/// (which may hold a password): the caller names it redacted.
pub fn split(url: &str) -> Result<Hosts, String> {
    let Some(Parts {
        scheme,
        userinfo,
        hostlist,
        tail,
    }) = parts(url)
    else {
        return Ok(Hosts {
            urls: vec![url.to_string()],
            attrs: SessionAttrs::Any,
        });
    };
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    let mut attrs = SessionAttrs::Any;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("target_session_attrs", v)) => {
                attrs = match v {
                    "any" => SessionAttrs::Any,
                    "read-write" | "primary" => SessionAttrs::ReadWrite,
                    other => {
                        return Err(format!(
                            "target_session_attrs={other} is not supported: the prober writes, so use read-write (or primary) to follow a failover, or any"
                        ))
                    }
                }
            }
            _ => kept.push(pair),
        }
    }
    let query = if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    };
    let hosts: Vec<&str> = hostlist.split(',').collect();
    if hosts.len() > 1 && hosts.iter().any(|h| h.is_empty()) {
        return Err("an empty host in the comma-separated host list".to_string());
    }
    Ok(Hosts {
        urls: hosts
            .iter()
            .map(|h| format!("{scheme}://{userinfo}{h}{path}{query}"))
            .collect(),
        attrs,
    })
}

/// How long a failover check waits for one host.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Failover checks start at most this often.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The hosts of a store's URL and which one its pool uses.
#[derive(Debug)]
pub struct Failover {
    hosts: Vec<PgConnectOptions>,
    attrs: SessionAttrs,
    current: AtomicUsize,
    checking: AtomicBool,
    last_check: parking_lot::Mutex<Option<std::time::Instant>>,
}

impl Failover {
    pub fn new(hosts: Vec<PgConnectOptions>, attrs: SessionAttrs) -> Failover {
        Failover {
            hosts,
            attrs,
            current: AtomicUsize::new(0),
            checking: AtomicBool::new(false),
            last_check: parking_lot::Mutex::new(None),
        }
    }

    pub fn attrs(&self) -> SessionAttrs {
        self.attrs
    }

    /// Starts a check of the hosts in the background, unless one runs or
    /// one started less than [`CHECK_EVERY`] ago, or there is one host.
    pub fn check(self: &Arc<Self>, pool: &PgPool) {
        if self.hosts.len() < 2 {
            return;
        }
        {
            let mut last = self.last_check.lock();
            if last.is_some_and(|t| t.elapsed() < CHECK_EVERY) {
                return;
            }
            if self.checking.swap(true, Ordering::AcqRel) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        let (me, pool) = (self.clone(), pool.clone());
        tokio::spawn(async move {
            me.choose(&pool).await;
            me.checking.store(false, Ordering::Release);
        });
    }

    /// Keeps the pool's host if it still suits `attrs`; else points the pool
    /// at the first host, in the URL's order, that answers and suits.
    pub(super) async fn choose(&self, pool: &PgPool) {
        if self.hosts.len() < 2 {
            return;
        }
        let was = self.current.load(Ordering::Acquire);
        let order = std::iter::once(was).chain((0..self.hosts.len()).filter(|i| *i != was));
        for i in order {
            let opts = &self.hosts[i];
            if !matches!(
                tokio::time::timeout(CHECK_TIMEOUT, suits(opts, self.attrs)).await,
                Ok(Ok(()))
            ) {
                continue;
            }
            if i != was {
                self.current.store(i, Ordering::Release);
                pool.set_connect_options(opts.clone());
                tracing::warn!(
                    from = %host(&self.hosts[was]),
                    to = %host(opts),
                    "Postgres failover: the store now writes to another host of DATABASE_URL"
                );
            }
            // A write failed: the idle connections are closed, so none left
            // on a host that changed (or was in use at the last switch) is
            // used again; new ones open where the pool points.
            for _ in 0..pool.size() {
                match pool.try_acquire() {
                    Some(c) => {
                        let _ = c.close().await;
                    }
                    None => break,
                }
            }
            return;
        }
        tracing::debug!(
            "no host of DATABASE_URL answers as required; the store keeps the one it has"
        );
    }
}

fn host(o: &PgConnectOptions) -> String {
    format!("{}:{}", o.get_host(), o.get_port())
}

/// Whether a new connection with `opts` opens and, for `ReadWrite`, can
/// write. A host without the database yet (a new cluster) is asked through
/// its `postgres` database, so the store can create it on the primary.
async fn suits(opts: &PgConnectOptions, attrs: SessionAttrs) -> Result<(), sqlx::Error> {
    let mut conn = match opts.connect().await {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
            opts.clone().database("postgres").connect().await?
        }
        other => other?,
    };
    let ok = writable(&mut conn, attrs).await;
    let _ = conn.close().await;
    ok
}

/// With `ReadWrite`, an error when `conn`'s sessions are read-only.
pub async fn writable(conn: &mut PgConnection, attrs: SessionAttrs) -> Result<(), sqlx::Error> {
    if attrs == SessionAttrs::Any {
        return Ok(());
    }
    let ro: String = sqlx::query_scalar("show transaction_read_only")
        .fetch_one(&mut *conn)
        .await?;
    if ro == "on" {
        return Err(sqlx::Error::Configuration(
            "this Postgres host is read-only (a standby, or a primary demoted by a switchover) and DATABASE_URL asks for target_session_attrs=read-write; the store tries the URL's other hosts".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_host_stays_as_it_is() {
        let h = split("postgres://u:p@db:5432/prober?sslmode=require").unwrap();
        assert_eq!(h.urls, ["postgres://u:p@db:5432/prober?sslmode=require"]);
        assert_eq!(h.attrs, SessionAttrs::Any);
    }

    #[test]
    fn several_hosts_each_get_the_credentials_path_and_query() {
        let h = split(
            "postgresql://u:p@a:5432,[::1]:5433,c/prober?sslmode=disable&target_session_attrs=read-write&application_name=x",
        )
        .unwrap();
        assert_eq!(
            h.urls,
            [
                "postgresql://u:p@a:5432/prober?sslmode=disable&application_name=x",
                "postgresql://u:p@[::1]:5433/prober?sslmode=disable&application_name=x",
                "postgresql://u:p@c/prober?sslmode=disable&application_name=x",
            ]
        );
        assert_eq!(h.attrs, SessionAttrs::ReadWrite);
        let h = split("postgres://a,b?target_session_attrs=primary").unwrap();
        assert_eq!(h.urls, ["postgres://a", "postgres://b"]);
        assert_eq!(h.attrs, SessionAttrs::ReadWrite);
    }

    #[test]
    fn a_password_in_a_url_of_several_hosts_is_redacted() {
        let shown = crate::store::redact_url("postgres://u:s3cret@a:1,b:2/db?sslmode=disable");
        assert_eq!(shown, "postgres://u:<redacted>@a:1,b:2/db?sslmode=disable");
    }

    #[test]
    fn unsupported_attrs_and_empty_hosts_are_refused_with_what_to_do() {
        let e = split("postgres://a,b/db?target_session_attrs=standby").unwrap_err();
        assert!(e.contains("use read-write"), "{e}");
        let e = split("postgres://a,,b/db").unwrap_err();
        assert!(e.contains("empty host"), "{e}");
    }
}
