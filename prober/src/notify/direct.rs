//! Notifications sent while Postgres is away (issue 18, item 5).
//!
//! The outbox lives in Postgres, so while it is away no notification can be
//! recorded, and none would be sent: on-call would go dark with the
//! database. When a per-run alert change cannot be saved, the engine asks
//! for its notice to be sent at once ([`Direct::send`]): each trigger
//! (and each resolve whose trigger this process sent the same way) goes to
//! its receivers once, now. When the change is saved later, its outbox rows
//! are recorded as delivered for the receivers that accepted
//! ([`Direct::take_delivered`]), so the worker does not send them again. A
//! receiver that refused waits for the outbox, as before.
//!
//! What this cannot promise: a process that dies before Postgres returns
//! never records the change; the next one evaluates the runs again and may
//! page the incident a second time (under another dedup key).

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;

use super::outbox::Claimed;
use super::worker::{self, Verdict};
use super::{NewNotification, Receivers};
use crate::alert::Event;

/// At most this many notifications are remembered as sent directly (an
/// outage with more incidents than this loses the memory of the oldest:
/// they may be sent a second time through the outbox).
const REMEMBERED: usize = 10_000;

/// One notification: receiver, dedup key, event.
type Key = (String, String, Event);

#[derive(Debug, Default)]
pub struct Direct {
    state: Mutex<State>,
    client: std::sync::OnceLock<Option<reqwest::Client>>,
}

#[derive(Debug, Default)]
struct State {
    /// Sent (or being sent) directly: never twice.
    tried: HashSet<Key>,
    /// Accepted by the receiver: recorded as delivered when saved.
    delivered: HashSet<Key>,
}

fn key(n: &NewNotification) -> Key {
    (n.receiver.clone(), n.dedup_key.clone(), n.event)
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
                    Event::Resolve => s.delivered.contains(&(
                        n.receiver.clone(),
                        n.dedup_key.clone(),
                        Event::Trigger,
                    )),
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
        let routing = routing.get();
        let Some(client) = (self.client).get_or_init(|| worker::client().ok()).clone() else {
            tracing::error!("cannot build an HTTP client to notify while Postgres is away; the notifications wait for the outbox");
            return;
        };
        for n in todo {
            let Some(receiver) = routing
                .receivers
                .iter()
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
                        let mut s = me.state.lock();
                        if s.delivered.len() < REMEMBERED {
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

    /// Whether `n` was delivered directly; forgets it (its row is being recorded).
    pub fn take_delivered(&self, n: &NewNotification) -> bool {
        let mut s = self.state.lock();
        let k = key(n);
        s.tried.remove(&k);
        // A trigger stays known until its incident's resolve is recorded.
        if n.event == Event::Resolve {
            let trigger = (k.0.clone(), k.1.clone(), Event::Trigger);
            s.delivered.remove(&trigger);
        }
        if n.event == Event::Trigger {
            s.delivered.contains(&k)
        } else {
            s.delivered.remove(&k)
        }
    }
}
