//! Notifications sent while Postgres is away (issue 18, item 5).
//!
//! The outbox lives in Postgres, so while it is away no notification can be
//! recorded, and none would be sent: on-call would go dark with the
//! database. When a per-run alert change cannot be saved, the engine asks
//! for its notice to be sent at once ([`Direct::send`]): each trigger
//! (and each resolve whose trigger this process sent the same way) goes to
//! its receivers once, now, with an idempotency key of its own
//! (`<dedup key>-direct-<event>`). When the change is saved later, the
//! rows of the notifications a receiver accepted go in as delivered
//! ([`Direct::delivered`], read in the save's transaction), so the worker
//! does not send them again; they are forgotten once that save commits
//! ([`Direct::forget`]), so a save that fails and is retried still finds
//! them. A receiver that refused waits for the outbox, as before.
//!
//! What stays at-least-once: a send still in flight when its change is
//! saved (its row goes in as due and the worker sends it again, under the
//! row's key), and a process that dies before Postgres returns (the change
//! is never recorded; the next process may page the incident again, under
//! another dedup key).

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;

use super::outbox::Claimed;
use super::worker::{self, Verdict};
use super::{NewNotification, Receivers};
use crate::alert::Event;

/// At most this many notifications are sent directly before their changes
/// are saved; past it the rest wait for the outbox (bounded memory). Sends
/// whose changes will never be saved (a stale change, a provisional
/// incident) are forgotten by the engine (`NoticeWriter::saved`).
const REMEMBERED: usize = 10_000;

/// One notification: receiver, dedup key, event.
type Key = (String, String, Event);

#[derive(Debug, Default)]
pub struct Direct {
    state: Mutex<State>,
    /// Built on first use; a failed build is tried again at the next send.
    client: Mutex<Option<reqwest::Client>>,
}

#[derive(Debug, Default)]
struct State {
    /// Sent (or being sent) directly and not yet saved: never twice.
    tried: HashSet<Key>,
    /// Accepted by the receiver: recorded as delivered when saved.
    delivered: HashSet<Key>,
}

fn key(n: &NewNotification) -> Key {
    key_of(n, n.event)
}

/// The key of `n`'s receiver and incident for `event`.
fn key_of(n: &NewNotification, event: Event) -> Key {
    (n.receiver.clone(), n.dedup_key.clone(), event)
}

impl Direct {
    /// Sends `notes` (one alert change's) in the background, each once:
    /// triggers, and resolves whose trigger was delivered directly.
    pub fn send(
        self: &Arc<Self>,
        alert_key: &str,
        notes: Vec<NewNotification>,
        routing: &Receivers,
    ) {
        let mut todo = Vec::new();
        {
            let mut s = self.state.lock();
            for n in notes {
                let allowed = match n.event {
                    Event::Trigger => true,
                    Event::Resolve => s.delivered.contains(&key_of(&n, Event::Trigger)),
                    Event::Remind => false,
                };
                if allowed && s.tried.len() < REMEMBERED && s.tried.insert(key(&n)) {
                    todo.push(n);
                }
            }
        }
        if todo.is_empty() {
            return;
        }
        let client = {
            let mut c = self.client.lock();
            if c.is_none() {
                *c = worker::client().ok();
            }
            c.clone()
        };
        let Some(client) = client else {
            tracing::error!("cannot build an HTTP client to notify while Postgres is away; the notifications wait for the outbox");
            let mut s = self.state.lock();
            for n in &todo {
                s.tried.remove(&key(n));
            }
            return;
        };
        let routing = routing.get();
        for n in todo {
            let Some(receiver) = (routing.receivers.iter())
                .find(|r| r.name == n.receiver)
                .cloned()
            else {
                continue;
            };
            let (me, client, alert_key) = (self.clone(), client.clone(), alert_key.to_string());
            tokio::spawn(async move {
                let c = Claimed {
                    id: 0,
                    alert_key: alert_key.clone(),
                    receiver: n.receiver.clone(),
                    event: n.event,
                    dedup_key: n.dedup_key.clone(),
                    payload: n.payload.clone(),
                    created_at: chrono::Utc::now(),
                    attempts: 1,
                };
                match worker::attempt(&client, Some(&receiver), &c).await {
                    Verdict::Delivered => {
                        tracing::info!(alert = %alert_key, receiver = %n.receiver, event = n.event.as_str(), "notified while Postgres is away (recorded as delivered when it returns)");
                        // Not when its change was saved meanwhile: its row went
                        // in as due, and the worker sends it again.
                        let mut s = me.state.lock();
                        if s.tried.contains(&key(&n)) {
                            s.delivered.insert(key(&n));
                        }
                    }
                    Verdict::Retry { error, .. } | Verdict::Fail(error) => {
                        tracing::warn!(alert = %alert_key, receiver = %n.receiver, error = %error, "cannot notify while Postgres is away; the notification is sent through the outbox when it returns");
                    }
                }
            });
        }
    }

    /// Nothing sent directly is waiting to be saved (the usual case: the
    /// save path then skips this bookkeeping).
    pub fn is_idle(&self) -> bool {
        let s = self.state.lock();
        s.tried.is_empty() && s.delivered.is_empty()
    }

    /// Whether `n` was delivered directly (read inside the save's transaction).
    pub fn delivered(&self, n: &NewNotification) -> bool {
        self.state.lock().delivered.contains(&key(n))
    }

    /// `notes` are saved (the transaction committed): forgotten. A trigger
    /// stays known as delivered until its incident's resolve is saved, so
    /// that resolve may be sent directly too.
    pub fn forget(&self, notes: &[NewNotification]) {
        let mut s = self.state.lock();
        for n in notes {
            s.tried.remove(&key(n));
            if n.event != Event::Trigger {
                s.delivered.remove(&key(n));
                s.delivered.remove(&key_of(n, Event::Trigger));
            }
        }
        // Triggers whose resolve never comes (a restart, a reload) are bounded.
        if s.delivered.len() > REMEMBERED {
            s.delivered.clear();
        }
    }
}
