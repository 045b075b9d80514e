//! `/status`: the public status page. Only the probes `ui.status_page`
//! selects, by their description (or name), grouped; up or down, 30 days'
//! availability and a 90-day bar; incidents from the alert history in plain
//! words. Nothing else: no URLs, error messages, versions or alert reasons.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use maud::{html, Markup};

use super::chart::day_bars;
use super::overview::{bar_days, BAR_DAYS};
use super::{availability, frame, html_response, status_badge, when, Windows};
use crate::alert::engine::RULE_FAILING;
use crate::alert::State as AlertState;
use crate::api::AppState;
use crate::config::settings::StatusPage;
use crate::config::Probe;
use crate::store::read::DayCount;

/// Alert transitions read to find the incidents.
const TRANSITIONS_READ: i64 = 1_000;
/// Incidents listed: the newest, of the last [`INCIDENT_DAYS`].
const INCIDENTS_SHOWN: usize = 20;
/// How far back incidents are read.
const INCIDENT_DAYS: i64 = 30;

/// One incident: a probe down from `from` until `to` (still down without it).
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub probe: String,
    pub from: DateTime<Utc>,
    pub to: Option<DateTime<Utc>>,
}

/// The probes on the public page.
pub fn selected(core: &AppState) -> Vec<Arc<Probe>> {
    let page = &core.settings.ui.status_page;
    (core.scheduler.probes().into_iter())
        .filter(|p| page.shows(&p.name, &p.labels))
        .collect()
}

/// The name a probe goes by on the public page: its description, else its name.
pub fn public_name(p: &Probe) -> &str {
    p.description.as_deref().unwrap_or(&p.name)
}

/// Incidents from transitions (newest first, as read): a `firing` opens one,
/// the next `resolved`/`ok` of the same alert closes it. Several alerts of
/// one probe firing together are one incident, from the first to the last.
pub fn incidents(transitions: &[(crate::alert::Transition, String)]) -> Vec<Incident> {
    let mut out: Vec<Incident> = Vec::new();
    let mut open: HashMap<&str, DateTime<Utc>> = HashMap::new();
    // Oldest first.
    for (t, probe) in transitions.iter().rev() {
        match t.to {
            AlertState::Firing => {
                open.entry(t.key.as_str()).or_insert(t.at);
            }
            AlertState::Resolved | AlertState::Ok => {
                if let Some(from) = open.remove(t.key.as_str()) {
                    out.push(Incident {
                        probe: probe.clone(),
                        from,
                        to: Some(t.at),
                    });
                }
            }
            AlertState::Pending => {}
        }
    }
    for (key, from) in open {
        if let Some((_, probe)) = transitions.iter().find(|(t, _)| t.key == key) {
            out.push(Incident {
                probe: probe.clone(),
                from,
                to: None,
            });
        }
    }
    // One probe's overlapping incidents merged.
    out.sort_by(|a, b| (a.probe.as_str(), a.from).cmp(&(b.probe.as_str(), b.from)));
    let mut merged: Vec<Incident> = Vec::new();
    for i in out {
        match merged.last_mut() {
            Some(m) if m.probe == i.probe && m.to.is_none_or(|end| i.from <= end) => {
                m.to = match (m.to, i.to) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            }
            _ => merged.push(i),
        }
    }
    merged.sort_by_key(|i| std::cmp::Reverse(i.from));
    merged
}

/// An incident in plain words.
pub fn say(i: &Incident, name: &str, now: DateTime<Utc>) -> String {
    let minutes = |a: DateTime<Utc>, b: DateTime<Utc>| ((b - a).num_seconds().max(0) + 59) / 60;
    match i.to {
        Some(to) => format!(
            "{name} was down from {} to {} UTC ({} min).",
            i.from.format("%Y-%m-%d %H:%M"),
            if to.date_naive() == i.from.date_naive() {
                to.format("%H:%M").to_string()
            } else {
                to.format("%Y-%m-%d %H:%M").to_string()
            },
            minutes(i.from, to)
        ),
        None => format!(
            "{name} has been down since {} UTC ({} min so far).",
            i.from.format("%Y-%m-%d %H:%M"),
            minutes(i.from, now)
        ),
    }
}

/// How long the public page's store reads are reused. The page is the one
/// a crowd reloads during an outage, and its reads scan every probe's day
/// counters (~100 ms at 1,000 probes): at most one such scan per this
/// period, whatever the traffic; the up/down status stays live.
pub const STATUS_READS_FOR: Duration = Duration::from_secs(30);

/// What `/status` reads from the store.
#[derive(Default)]
pub struct Reads {
    month: Windows,
    bars: HashMap<String, Vec<DayCount>>,
    transitions: Vec<(crate::alert::Transition, String)>,
}

/// The last [`Reads`], reused for [`STATUS_READS_FOR`]. Requests that find
/// it stale wait for one read rather than each making their own.
#[derive(Default)]
pub struct StatusReads {
    held: tokio::sync::Mutex<Option<Held>>,
}

/// When the reads were made, for which probes, and what they found.
type Held = (Instant, Vec<String>, Arc<Reads>);

impl StatusReads {
    /// The reads for `names`, fresh or at most [`STATUS_READS_FOR`] old;
    /// `None` when the store could not answer (that is not kept).
    async fn get(
        &self,
        core: &AppState,
        names: &[String],
        now: DateTime<Utc>,
        today: DateTime<Utc>,
    ) -> Option<Arc<Reads>> {
        let mut held = self.held.lock().await;
        if let Some((at, for_names, reads)) = held.as_ref() {
            if at.elapsed() < STATUS_READS_FOR && for_names == names {
                return Some(reads.clone());
            }
        }
        let read = tokio::try_join!(
            core.store.month_counts(),
            core.store
                .daily_counts(today - TimeDelta::days(BAR_DAYS - 1)),
            crate::alert::persist::history_of(
                &core.store,
                names,
                RULE_FAILING,
                now - TimeDelta::days(INCIDENT_DAYS),
                TRANSITIONS_READ
            ),
        );
        let (m, bars, transitions) = read.ok()?;
        let reads = Arc::new(Reads {
            month: super::overview::counts_as_windows(m),
            bars,
            transitions,
        });
        *held = Some((Instant::now(), names.to_vec(), reads.clone()));
        Some(reads)
    }
}

/// `GET /status`.
pub async fn page(State(core): State<AppState>) -> Response {
    let page = &core.settings.ui.status_page;
    let probes = selected(&core);
    let now = Utc::now();
    let today = now.duration_trunc(TimeDelta::days(1)).unwrap_or(now);
    let names: Vec<String> = probes.iter().map(|p| p.name.clone()).collect();
    // Only a probe failing is an outage: a latency, certificate, SLO or
    // trend alert is not "down" on a public page.
    let reads = core.status_reads.get(&core, &names, now, today).await;
    let empty = Reads::default();
    let degraded = reads.is_none();
    let Reads {
        month,
        bars,
        transitions,
    } = reads.as_deref().unwrap_or(&empty);
    let by_name: HashMap<&str, &Arc<Probe>> = probes.iter().map(|p| (p.name.as_str(), p)).collect();
    // An incident without its end is shown only while its alert still fires
    // (its start may be older than the transitions read).
    let firing: Vec<String> = (core.alerts.active().into_iter())
        .filter(|a| a.state == AlertState::Firing && a.rule == RULE_FAILING)
        .map(|a| a.probe)
        .collect();
    let incidents: Vec<(Incident, String)> = incidents(transitions)
        .into_iter()
        .filter(|i| i.to.is_some() || firing.contains(&i.probe))
        .take(INCIDENTS_SHOWN)
        .filter_map(|i| {
            let name = public_name(by_name.get(i.probe.as_str())?).to_string();
            Some((i, name))
        })
        .collect();
    let statuses: HashMap<String, Option<bool>> = (probes.iter())
        .map(|p| {
            (
                p.name.clone(),
                core.live.probe(&p.name).lock().status.map(|s| s.up),
            )
        })
        .collect();
    let body = render(
        page, &probes, &statuses, month, bars, &incidents, degraded, now,
    );
    html_response(
        StatusCode::OK,
        frame(
            &page.title,
            Some(core.settings.ui.refresh.as_secs()),
            true,
            body,
        ),
    )
}

#[allow(clippy::too_many_arguments)]
fn render(
    page: &StatusPage,
    probes: &[Arc<Probe>],
    statuses: &HashMap<String, Option<bool>>,
    month: &Windows,
    bars: &HashMap<String, Vec<DayCount>>,
    incidents: &[(Incident, String)],
    degraded: bool,
    now: DateTime<Utc>,
) -> Markup {
    let mut groups: BTreeMap<String, Vec<&Arc<Probe>>> = BTreeMap::new();
    for p in probes {
        let g = (page.group_by.as_ref())
            .and_then(|g| p.labels.get(g).cloned())
            .unwrap_or_default();
        groups.entry(g).or_default().push(p);
    }
    let down = statuses.values().filter(|s| **s == Some(false)).count();
    let today = now.date_naive();
    html! {
        h1 { (page.title) }
        @if probes.is_empty() {
            p.muted { "Nothing is shown here yet." }
        } @else if down == 0 {
            p.up role="status" { b { "All systems operational." } }
        } @else {
            p.down role="status" { b { (down) " of " (probes.len()) " down." } }
        }
        @if degraded { p.muted { "History is unavailable for a moment; the status above is live." } }
        @for (g, members) in &groups {
            section aria-label=(if g.is_empty() { "Services" } else { g.as_str() }) {
                @if !g.is_empty() { h2 { (g) } }
                div.scroll { table {
                    thead { tr { th scope="col" { "Service" } th scope="col" { "Now" } th.num scope="col" { "30 days" } th.hide-narrow scope="col" { "Last 90 days" } } }
                    tbody { @for p in members {
                        tr {
                            th scope="row" { (public_name(p)) }
                            td { (status_badge(statuses.get(&p.name).copied().flatten())) }
                            td.num { (availability(month.get(&p.name))) }
                            td.hide-narrow { (day_bars(&bar_days(bars.get(&p.name), today))) }
                        }
                    } }
                } }
            }
        }
        h2 { "Incidents, last 30 days" }
        @if incidents.is_empty() { p.muted { "No incidents." } }
        ul.plain { @for (i, name) in incidents { li { (say(i, name, now)) " " span.muted { (when(i.from)) } } } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Transition;

    fn t(key: &str, to: AlertState, at: &str) -> (Transition, String) {
        (
            Transition {
                key: key.into(),
                from: AlertState::Ok,
                to,
                at: at.parse().unwrap(),
                reason: "GET http://internal/ 503".into(),
            },
            key.split('/').next().unwrap().to_string(),
        )
    }

    #[test]
    fn incidents_pair_firing_with_resolved_and_merge_a_probe_s_overlaps() {
        // Newest first, as the history reads.
        let history = vec![
            t("web/latency/eu", AlertState::Firing, "2026-12-04T11:00:00Z"),
            t(
                "api/failures/eu",
                AlertState::Resolved,
                "2026-12-04T10:20:00Z",
            ),
            t("api/slo/eu", AlertState::Resolved, "2026-12-04T10:30:00Z"),
            t("api/slo/eu", AlertState::Firing, "2026-12-04T10:10:00Z"),
            t(
                "api/failures/eu",
                AlertState::Firing,
                "2026-12-04T10:00:00Z",
            ),
            t(
                "api/failures/eu",
                AlertState::Pending,
                "2026-12-04T09:59:00Z",
            ),
        ];
        let found = incidents(&history);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].probe, "web");
        assert_eq!(found[0].to, None);
        assert_eq!(found[1].probe, "api");
        assert_eq!(
            found[1].from,
            "2026-12-04T10:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(found[1].to, Some("2026-12-04T10:30:00Z".parse().unwrap()));
        let now = "2026-12-04T11:05:00Z".parse().unwrap();
        assert_eq!(
            say(&found[1], "Payments API", now),
            "Payments API was down from 2026-12-04 10:00 to 10:30 UTC (30 min)."
        );
        let long = Incident {
            probe: "api".into(),
            from: "2026-12-03T23:00:00Z".parse().unwrap(),
            to: Some("2026-12-04T01:00:00Z".parse().unwrap()),
        };
        assert_eq!(
            say(&long, "API", now),
            "API was down from 2026-12-03 23:00 to 2026-12-04 01:00 UTC (120 min)."
        );
        assert_eq!(
            say(&found[0], "Website", now),
            "Website has been down since 2026-12-04 11:00 UTC (5 min so far)."
        );
    }
}
