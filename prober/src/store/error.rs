//! The store's error: what failed, why (as far as the writer acts on it),
//! what to do, and the error that caused it (kept as its `source`, so the
//! whole chain can be logged).

use std::error::Error as StdError;

use super::ACQUIRE_TIMEOUT;

/// A store call that failed: its message is one line saying what failed, the
/// database's own words and what to do; [`std::error::Error::source`] is the
/// `sqlx` error (or migration error) underneath.
#[derive(Debug, thiserror::Error)]
#[error("{context}{}", problem_suffix(.problem.as_deref()))]
pub struct StoreError {
    /// What the store was doing: "writing 512 runs to Postgres at 127.0.0.1:5432/prober".
    context: String,
    /// What went wrong and what to do, when something underneath said.
    problem: Option<String>,
    cause: Cause,
    #[source]
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

fn problem_suffix(problem: Option<&str>) -> String {
    problem.map(|p| format!(": {p}")).unwrap_or_default()
}

/// Why a store call failed, as far as the writer acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Postgres refused the data itself (SQLSTATE class 22 data exception,
    /// 23 integrity, 54 too large): retrying the same rows fails the same way.
    Content,
    /// The database, a table or a function is missing (3D000, 42P01, 42883,
    /// 3F000): Postgres came back empty (a restore, a fresh primary).
    Missing,
    /// A statement or a write took too long (57014 `statement_timeout`, or
    /// the writer's own timeout).
    Timeout,
    /// Anything else: connection refused or lost, authentication, …
    Other,
}

impl StoreError {
    /// An error the store itself found (no error underneath): `message` says
    /// what failed and what to do.
    pub fn new(message: impl Into<String>, cause: Cause) -> StoreError {
        StoreError {
            context: message.into(),
            problem: None,
            cause,
            source: None,
        }
    }

    /// An error the store found in what `source` said: `message` says what
    /// failed and what to do.
    pub(super) fn with_source(
        message: impl Into<String>,
        cause: Cause,
        source: impl StdError + Send + Sync + 'static,
    ) -> StoreError {
        StoreError {
            source: Some(Box::new(source)),
            ..StoreError::new(message, cause)
        }
    }

    pub fn cause(&self) -> Cause {
        self.cause
    }

    /// What the store was doing when it failed, without the database's words:
    /// safe to show where the database's text must not go.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// The SQLSTATE classes the writer acts on.
    pub(super) fn classify(code: Option<&str>) -> Cause {
        match code {
            Some(c) if c.starts_with("22") || c.starts_with("23") || c.starts_with("54") => {
                Cause::Content
            }
            Some("3D000" | "42P01" | "42883" | "3F000") => Cause::Missing,
            Some("57014") => Cause::Timeout,
            _ => Cause::Other,
        }
    }
}

/// A store error with its context; a Postgres error keeps its SQLSTATE's
/// meaning ([`Cause`]), whatever layer (`sqlx::Error`, a migration) carried
/// it, and stays the error's `source`.
pub fn err<E: StdError + Send + Sync + 'static>(context: &str, e: E) -> StoreError {
    let any: &dyn std::any::Any = &e;
    let sql = any.downcast_ref::<sqlx::Error>().or_else(|| {
        match any.downcast_ref::<sqlx::migrate::MigrateError>() {
            Some(sqlx::migrate::MigrateError::Execute(e)) => Some(e),
            _ => None,
        }
    });
    let code = match sql {
        Some(sqlx::Error::Database(d)) => d.code().map(|c| c.into_owned()),
        _ => None,
    };
    let (cause, problem) = match sql {
        Some(sqlx::Error::PoolTimedOut) => (
            Cause::Timeout,
            format!(
                "no connection to Postgres within {} s: it does not answer (a hung server or network path) or every connection is busy with a slow statement",
                ACQUIRE_TIMEOUT.as_secs()
            ),
        ),
        _ => {
            let cause = StoreError::classify(code.as_deref());
            let advice = advice(sql, code.as_deref(), cause);
            (cause, format!("{e}{advice}"))
        }
    };
    StoreError {
        context: context.to_string(),
        problem: Some(problem),
        cause,
        source: Some(Box::new(e)),
    }
}

/// What to do about a failure, as `; …` to append to the database's words
/// (empty when there is nothing useful to say).
fn advice(sql: Option<&sqlx::Error>, code: Option<&str>, cause: Cause) -> &'static str {
    match (sql, code, cause) {
        (Some(sqlx::Error::Io(_)), _, _) => {
            "; is Postgres running and reachable at that address?"
        }
        (Some(sqlx::Error::Tls(_)), _, _) => {
            "; check sslmode and sslrootcert in DATABASE_URL against the server's certificate"
        }
        (_, Some("28P01" | "28000"), _) => "; check the user and password in DATABASE_URL",
        (_, _, Cause::Missing) => {
            "; the database or its schema is missing (a restore, a fresh primary): the writer recreates it when migrations are on"
        }
        (_, _, Cause::Timeout) => {
            "; the statement ran past Postgres's statement_timeout: check Postgres's load"
        }
        (_, _, Cause::Content) => {
            "; Postgres refused the data itself: retrying the same rows fails the same way"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified_by_what_the_writer_does_about_them() {
        assert_eq!(StoreError::classify(Some("22021")), Cause::Content);
        assert_eq!(StoreError::classify(Some("22P05")), Cause::Content);
        assert_eq!(StoreError::classify(Some("23505")), Cause::Content);
        assert_eq!(StoreError::classify(Some("54000")), Cause::Content);
        assert_eq!(StoreError::classify(Some("42P01")), Cause::Missing);
        assert_eq!(StoreError::classify(Some("3D000")), Cause::Missing);
        assert_eq!(StoreError::classify(Some("57014")), Cause::Timeout);
        assert_eq!(StoreError::classify(Some("08006")), Cause::Other);
        assert_eq!(StoreError::classify(None), Cause::Other);
    }

    #[test]
    fn a_refused_connection_says_what_failed_why_and_what_to_do_and_keeps_its_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let e = err(
            "writing 512 runs to Postgres at 127.0.0.1:5432/prober",
            sqlx::Error::Io(io),
        );

        let line = e.to_string();
        assert!(
            line.starts_with("writing 512 runs to Postgres at 127.0.0.1:5432/prober: "),
            "{line}"
        );
        assert!(line.contains("connection refused"), "{line}");
        assert!(
            line.ends_with("is Postgres running and reachable at that address?"),
            "{line}"
        );
        assert_eq!(e.cause(), Cause::Other);
        assert_eq!(
            e.context(),
            "writing 512 runs to Postgres at 127.0.0.1:5432/prober"
        );
        let source = e.source().expect("the sqlx error is kept");
        assert!(source.downcast_ref::<sqlx::Error>().is_some());
    }

    #[test]
    fn a_pool_timeout_is_a_timeout_that_says_postgres_does_not_answer() {
        let e = err("reading runs", sqlx::Error::PoolTimedOut);
        assert_eq!(e.cause(), Cause::Timeout);
        assert!(
            e.to_string()
                .contains("no connection to Postgres within 3 s"),
            "{e}"
        );
    }

    #[test]
    fn an_error_the_store_found_itself_is_its_message_alone() {
        let e = StoreError::new("a write did not finish", Cause::Timeout);
        assert_eq!(e.to_string(), "a write did not finish");
        assert!(e.source().is_none());
    }
}
