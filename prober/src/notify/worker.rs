//! The delivery worker: claims due notifications from the outbox, sends
//! them, and marks each delivered, due again later (exponential backoff with
//! jitter, 1 s … 5 min, or the receiver's `Retry-After`), or failed (a
//! permanent rejection, or still failing 24 h after it was recorded).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::outbox::{self, Claimed};
use super::{render, Content, Receivers};
use crate::config::receivers::{origin, Receiver, ReceiverKind};
use crate::store::Store;

/// The first retry waits about this long.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Retries never wait longer (unless the receiver asks with `Retry-After`).
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A notification still failing this long after it was recorded is given up.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(86_400);
/// How long one send may take.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// A claim lasts this long: three sends' timeouts, so it never lapses while
/// its one send is in flight (another replica would send it again); a worker
/// that died mid-send frees its row after it.
pub const LEASE: Duration = Duration::from_secs(30);
/// Notifications claimed at a time: one, so a crash leaves only the one in
/// flight claimed (the one a receiver may have accepted), not a batch whose
/// rest would wait out the lease; and a claim is never held while earlier
/// ones of its batch are sent.
pub const CLAIM: i64 = 1;
const _: () = assert!(LEASE.as_secs() >= 3 * SEND_TIMEOUT.as_secs());
/// How often the outbox is polled when it is idle.
pub const POLL: Duration = Duration::from_millis(250);
/// The longest `Retry-After` honoured.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(3_600);

/// The header carrying the webhook's HMAC-SHA256 signature of the body.
pub const SIGNATURE_HEADER: &str = "X-Prober-Signature";

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again, after this long if the receiver said.
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// Do not try again.
    Fail(String),
}

/// `sha256=<hex>`: the webhook signature of a body.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this branch is never taken.
        Err(_) => return String::new(),
    };
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(7 + bytes.len() * 2);
    hex.push_str("sha256=");
    for b in bytes {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// The wait before attempt `attempts + 1`: 1 s doubling to 5 min, ±25 % jitter.
pub fn backoff(attempts: i32) -> Duration {
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    let base = BACKOFF_MIN
        .saturating_mul(2u32.saturating_pow(exp))
        .min(BACKOFF_MAX);
    let jitter = 0.75 + rand::random::<f64>() * 0.5;
    base.mul_f64(jitter).clamp(BACKOFF_MIN, BACKOFF_MAX)
}

fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs).clamp(BACKOFF_MIN, RETRY_AFTER_MAX));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let wait = at.with_timezone(&Utc) - Utc::now();
    // `Retry-After: 0` (or a date past) waits the shortest backoff: never a
    // tight loop of sends to a receiver that asks to be left alone.
    Some((wait.to_std().unwrap_or(Duration::ZERO)).clamp(BACKOFF_MIN, RETRY_AFTER_MAX))
}

/// The header a webhook request carries so that the receiver can drop a
/// repeat: the same value on every attempt of one notification (retries, and
/// a re-send after a crash between acceptance and its record), another for
/// every other notification (a reminder too).
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// Sends one notification to one receiver; a webhook gets `idempotency_key`
/// in [`IDEMPOTENCY_HEADER`].
pub async fn send(
    client: &reqwest::Client,
    r: &Receiver,
    c: &Content,
    idempotency_key: Option<&str>,
) -> Verdict {
    let body = render::body(r, c);
    let bytes = match serde_json::to_vec(&body) {
        Ok(b) => b,
        Err(e) => return Verdict::Fail(format!("cannot encode the notification: {e}")),
    };
    let url = r.endpoint();
    let mut req = client
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .timeout(SEND_TIMEOUT);
    if let (ReceiverKind::Webhook, Some(secret)) = (r.kind, &r.secret) {
        req = req.header(SIGNATURE_HEADER, signature(secret, &bytes));
    }
    if let (ReceiverKind::Webhook, Some(key)) = (r.kind, idempotency_key) {
        req = req.header(IDEMPOTENCY_HEADER, key);
    }
    // Only the origin: webhook URLs (Slack's) carry their secret in the path.
    let shown = origin(&url);
    let resp = match req.body(bytes).send().await {
        Ok(resp) => resp,
        Err(e) => {
            let e = e.without_url();
            let what = if e.is_timeout() {
                format!("no answer within {}s", SEND_TIMEOUT.as_secs())
            } else if e.is_connect() {
                "cannot connect".to_string()
            } else {
                "request failed".to_string()
            };
            return Verdict::Retry {
                error: format!(
                    "{what} to {shown} ({e}); will retry: check that the receiver is up and reachable from the prober"
                ),
                after: None,
            };
        }
    };
    let status = resp.status();
    if status.is_success() {
        return Verdict::Delivered;
    }
    let after = retry_after(resp.headers());
    let text: String = resp
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect();
    let code = status.as_u16();
    let permanent =
        code == 400 && matches!(r.kind, ReceiverKind::PagerDuty | ReceiverKind::Alertmanager);
    if permanent {
        return Verdict::Fail(format!(
            "{shown} rejected the notification as invalid (HTTP 400: {text}); not retried: fix the receiver's settings (routing_key, url) or report the body as a prober bug"
        ));
    }
    let hint = match code {
        429 => "rate limited; will retry after the receiver's Retry-After",
        401 | 403 => "will retry: check the receiver's credentials (url, routing_key, token)",
        404 => "will retry: check the receiver's url",
        _ if status.is_server_error() => {
            "the receiver failed; will retry: check the receiver's service if this persists"
        }
        _ => "will retry: check the receiver's settings",
    };
    Verdict::Retry {
        error: format!("{shown} answered HTTP {code} ({text}); {hint}"),
        after: if matches!(code, 429 | 503) {
            after
        } else {
            None
        },
    }
}

/// The HTTP client of deliveries. Building it fails only when the TLS
/// backend or the resolver cannot start (logged by the caller).
pub(super) fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(concat!("prober/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .build()
}

/// What the worker did, for `/metrics`.
#[derive(Debug, Default)]
pub struct NotifyStats {
    /// Notifications a receiver accepted.
    pub delivered: std::sync::atomic::AtomicU64,
    /// Attempts that failed and will be retried.
    pub retried: std::sync::atomic::AtomicU64,
    /// Notifications given up (permanent error, or 24 h of failures): on-call was not told.
    pub given_up: std::sync::atomic::AtomicU64,
}

/// Starts the worker; it stops when `stop` is cancelled (claimed but unsent
/// notifications are given back).
/// `instance`: the spool directory's id (see `Spool::instance`), under
/// which claims are made and, at start, recovered.
pub fn start(
    store: Store,
    receivers: Receivers,
    stats: Arc<NotifyStats>,
    store_ready: Arc<crate::store::writer::StoreHealth>,
    instance: Option<String>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // The outbox exists only once the writer has created and migrated the database.
        tokio::select! {
            () = store_ready.wait_prepared() => run(store, receivers, stats, instance, stop).await,
            () = stop.cancelled() => {}
        }
    })
}

async fn run(
    store: Store,
    shared: Receivers,
    stats: Arc<NotifyStats>,
    instance: Option<String>,
    stop: CancellationToken,
) {
    let client = loop {
        match client() {
            Ok(c) => break c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the HTTP client that sends notifications; none is sent until it can be built (retried every minute)");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    };
    let mut warned = false;
    let mut last_resend = tokio::time::Instant::now();
    let mut unrecovered = instance.is_some();
    loop {
        if let (true, Some(me)) = (unrecovered, &instance) {
            match outbox::recover(&store, me).await {
                Ok(n) => {
                    unrecovered = false;
                    if n > 0 {
                        tracing::info!(notifications = n, "notifications an earlier process on this spool directory claimed and had not settled are due again now (same idempotency key)");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot recover earlier claims yet"),
            }
        }
        let routing = shared.get();
        let by_name: HashMap<&str, &Receiver> = (routing.receivers.iter())
            .map(|r| (r.name.as_str(), r))
            .collect();
        let resends = (routing.receivers.iter()).any(|r| r.kind == ReceiverKind::Alertmanager);
        if resends && last_resend.elapsed() >= render::ALERTMANAGER_RESEND {
            last_resend = tokio::time::Instant::now();
            tokio::select! {
                _ = resend(&store, &client, &by_name) => {}
                _ = stop.cancelled() => return,
            }
        }
        let claimed = match outbox::claim(&store, CLAIM, LEASE, instance.as_deref()).await {
            Ok(c) => {
                warned = false;
                c
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, "cannot read the notification outbox; notifications wait until Postgres is back");
                    warned = true;
                }
                Vec::new()
            }
        };
        let idle = claimed.is_empty();
        let mut pending: Vec<i64> = claimed.iter().map(|c| c.id).collect();
        for c in &claimed {
            let span = tracing::info_span!("notify.deliver", receiver = %c.receiver);
            let verdict = tokio::select! {
                v = attempt(&client, by_name.get(c.receiver.as_str()).copied(), c).instrument(span) => v,
                _ = stop.cancelled() => {
                    if let Err(e) = outbox::release(&store, &pending).await {
                        tracing::warn!(error = %e, "cannot give back claimed notifications; they are due again after the lease");
                    }
                    return;
                }
            };
            pending.retain(|id| *id != c.id);
            settle(&store, c, verdict, &stats).await;
        }
        if idle {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.cancelled() => return,
            }
        } else if stop.is_cancelled() {
            return;
        }
    }
}

/// Sends the alerts still firing to Alertmanager again, so that it keeps
/// them active (it ends an alert at its `endsAt`). Best effort: a failure
/// waits for the next round.
async fn resend(store: &Store, client: &reqwest::Client, by_name: &HashMap<&str, &Receiver>) {
    let firing = match outbox::firing_triggers(store).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "cannot re-send firing alerts to Alertmanager this round");
            return;
        }
    };
    for (name, payload) in firing {
        let Some(r) = by_name.get(name.as_str()) else {
            continue;
        };
        if r.kind != ReceiverKind::Alertmanager {
            continue;
        }
        let Ok(content) = serde_json::from_value::<Content>(payload) else {
            continue;
        };
        if let Verdict::Retry { error, .. } | Verdict::Fail(error) =
            send(client, r, &content, None).await
        {
            tracing::warn!(receiver = %r.name, alert = %content.alert_key, "cannot re-send a firing alert to Alertmanager (it ends the alert 4 minutes after the last receipt); next try in a minute: {error}");
        }
    }
}

pub(super) async fn attempt(
    client: &reqwest::Client,
    r: Option<&Receiver>,
    c: &Claimed,
) -> Verdict {
    let Some(r) = r else {
        return Verdict::Fail(format!(
            "receiver {:?} is no longer in the settings; not sent: add it back to prober.yaml to deliver new notifications",
            c.receiver
        ));
    };
    let content: Content = match serde_json::from_value(c.payload.clone()) {
        Ok(content) => content,
        Err(e) => {
            return Verdict::Fail(format!(
                "the stored notification cannot be read ({e}); not sent: this is a prober bug, please report it"
            ))
        }
    };
    // The outbox row: one per notification and receiver, the same on every
    // attempt. A direct send (id 0: no row yet, Postgres away) is keyed by
    // its event, so a trigger and its resolve never share a key.
    let key = if c.id == 0 {
        format!("{}-direct-{}", c.dedup_key, c.event.as_str())
    } else {
        format!("{}-{}", c.dedup_key, c.id)
    };
    send(client, r, &content, Some(&key)).await
}

/// The reason to give up a failing notification recorded `age` ago, if it is time.
pub fn give_up(receiver: &str, error: &str, attempts: i32, age: Duration) -> Option<String> {
    (age >= GIVE_UP_AFTER).then(|| {
        format!(
            "receiver {receiver}: {error}; given up after {attempts} attempts over 24 h: tell on-call by hand, then fix the receiver"
        )
    })
}

async fn settle(store: &Store, c: &Claimed, verdict: Verdict, stats: &NotifyStats) {
    use std::sync::atomic::Ordering::Relaxed;
    let result = match verdict {
        Verdict::Delivered => {
            stats.delivered.fetch_add(1, Relaxed);
            tracing::info!(receiver = %c.receiver, event = c.event.as_str(), alert = %c.alert_key, attempts = c.attempts, "notification delivered");
            outbox::delivered(store, c.id).await
        }
        Verdict::Fail(error) => {
            stats.given_up.fetch_add(1, Relaxed);
            let error = format!("receiver {}: {error}", c.receiver);
            tracing::error!(alert = %c.alert_key, event = c.event.as_str(), attempts = c.attempts, "notification given up: {error}");
            outbox::failed(store, c.id, &error).await
        }
        Verdict::Retry { error, after } => {
            let age = (Utc::now() - c.created_at)
                .to_std()
                .unwrap_or(Duration::ZERO);
            if let Some(error) = give_up(&c.receiver, &error, c.attempts, age) {
                stats.given_up.fetch_add(1, Relaxed);
                tracing::error!(alert = %c.alert_key, event = c.event.as_str(), "notification given up: {error}");
                outbox::failed(store, c.id, &error).await
            } else {
                stats.retried.fetch_add(1, Relaxed);
                let wait = after.unwrap_or_else(|| backoff(c.attempts));
                let error = format!("receiver {}: {error}", c.receiver);
                tracing::warn!(alert = %c.alert_key, event = c.event.as_str(), attempts = c.attempts, retry_in_ms = wait.as_millis() as u64, "notification not delivered: {error}");
                let at = Utc::now()
                    + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::seconds(1));
                outbox::retry(store, c.id, at, &error).await
            }
        }
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, receiver = %c.receiver, "cannot record the notification's outcome; it is due again after the lease (a receiver may see it twice)");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn retry_after_zero_waits_the_shortest_backoff_and_long_ones_are_capped() {
        let with = |v: &str| {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(reqwest::header::RETRY_AFTER, v.parse().unwrap());
            retry_after(&h)
        };
        assert_eq!(with("0"), Some(BACKOFF_MIN));
        assert_eq!(with("Tue, 01 Dec 1998 00:00:00 GMT"), Some(BACKOFF_MIN));
        assert_eq!(with("120"), Some(Duration::from_secs(120)));
        assert_eq!(with("99999999"), Some(RETRY_AFTER_MAX));
    }

    use super::*;

    #[test]
    fn backoff_grows_from_a_second_to_five_minutes() {
        for _ in 0..50 {
            let first = backoff(1);
            assert!(first >= BACKOFF_MIN && first <= Duration::from_millis(1_250));
            let late = backoff(30);
            assert!(late >= Duration::from_secs(225) && late <= BACKOFF_MAX);
        }
    }

    #[test]
    fn a_notification_failing_for_24_hours_is_given_up_with_the_reason() {
        assert_eq!(give_up("pd", "x", 3, Duration::from_secs(3_600)), None);
        let why = give_up("pd", "cannot connect", 300, GIVE_UP_AFTER).unwrap_or_default();
        assert!(
            why.contains("receiver pd") && why.contains("cannot connect") && why.contains("24 h"),
            "{why}"
        );
    }

    #[test]
    fn the_signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
