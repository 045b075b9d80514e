//! `/`: every probe, grouped by a label, with its status, availability over
//! the last hour, day and 30 days, p95 over the hour and the day, and a bar
//! of its last 90 days; the open alerts and recent trend findings above them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DurationRound, NaiveDate, TimeDelta, Utc};
use maud::{html, Markup};

use super::chart::{day_bars, Day};
use super::{ago, availability, frame, html_response, status_badge, us, when, Windows};
use crate::alert::Alert;
use crate::api::AppState;
use crate::config::Probe;
use crate::results::Status;
use crate::store::read::DayCount;
use crate::store::trends::{Finding, FindingFilter};

/// Days in each probe's availability bar.
pub const BAR_DAYS: i64 = 90;
/// Trend findings listed above the probes: the newest open ones of this many days.
const FINDINGS_DAYS: i64 = 7;
/// Most trend findings listed.
const FINDINGS_SHOWN: i64 = 20;

/// A probe on the overview: its definition, status and last run's time.
pub type ShownProbe = (Arc<Probe>, Option<Status>, Option<chrono::DateTime<Utc>>);

/// What the overview shows, read once per request.
pub struct OverviewData {
    pub now: chrono::DateTime<Utc>,
    /// The probes shown (the label filter applied), with their status.
    pub probes: Vec<ShownProbe>,
    pub hour: Windows,
    pub day: Windows,
    /// Runs and failures only: a 30-day p95 of every probe costs more than
    /// the page's budget (it is on each probe's page, `range=30d`).
    pub month: Windows,
    pub bars: HashMap<String, Vec<DayCount>>,
    pub alerts: Vec<Alert>,
    pub findings: Vec<Finding>,
    /// Why the store's numbers are missing, when they are.
    pub store_error: Option<String>,
}

/// Reads what the overview shows: the scheduled probes that carry every
/// label of `filters`, their live status, and the store's windows.
pub async fn overview_data(core: &AppState, filters: &[(String, String)]) -> OverviewData {
    let now = Utc::now();
    let today = now.duration_trunc(TimeDelta::days(1)).unwrap_or(now);
    let findings = FindingFilter {
        since: Some(now - TimeDelta::days(FINDINGS_DAYS)),
        state: Some("open".into()),
        labels: filters.to_vec(),
        limit: FINDINGS_SHOWN,
        ..FindingFilter::default()
    };
    let store = &core.store;
    let read = tokio::try_join!(
        store.last_hour(),
        store.last_day(),
        store.month_counts(),
        store.daily_counts(today - TimeDelta::days(BAR_DAYS - 1)),
        store.findings(&findings),
    );
    let (hour, day, month, bars, found, store_error) = match read {
        Ok((h, d, m, b, f)) => (h, d, counts_as_windows(m), b, f, None),
        Err(e) => (
            HashMap::new(),
            HashMap::new(),
            HashMap::new(),
            HashMap::new(),
            Vec::new(),
            Some(e.to_string()),
        ),
    };
    let keep =
        |labels: &BTreeMap<String, String>| filters.iter().all(|(k, v)| labels.get(k) == Some(v));
    let mut probes = Vec::new();
    for p in core.scheduler.probes() {
        if keep(&p.labels) {
            let state = core.live.probe(&p.name);
            let s = state.lock();
            let last = s.recent.back().map(|r| r.scheduled_at);
            probes.push((p, s.status, last));
        }
    }
    let alerts = (core.alerts.active().into_iter())
        .filter(|a| probes.iter().any(|(p, _, _)| p.name == a.probe))
        .collect();
    OverviewData {
        now,
        probes,
        hour,
        day,
        month,
        bars,
        alerts,
        findings: found,
        store_error,
    }
}

/// Runs and failures by probe as windows without percentiles.
pub(super) fn counts_as_windows(counts: HashMap<String, (i64, i64)>) -> Windows {
    (counts.into_iter())
        .map(|(name, (runs, failures))| {
            let w = crate::store::read::WindowStats {
                runs,
                failures,
                ..Default::default()
            };
            (name, w)
        })
        .collect()
}

/// `GET /`: `group` (a label key) groups the probes, `label=key=value` filters them.
pub async fn page(
    State(core): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    // The form sends `label=` when its box is empty: no filter, not a bad one.
    let pairs: Vec<(String, String)> = (pairs.into_iter())
        .filter(|(k, v)| !(k == "label" && v.trim().is_empty()))
        .collect();
    let filters = match crate::api::probes::label_filters(&pairs) {
        Ok(f) => f,
        Err(e) => {
            return super::error_page(
                StatusCode::BAD_REQUEST,
                "The label filter is not key=value",
                &e.message,
            )
        }
    };
    let group = (pairs.iter())
        .find(|(k, _)| k == "group")
        .map(|(_, v)| v.trim().to_string())
        .or_else(|| core.settings.ui.group_by.clone())
        .filter(|g| !g.is_empty());
    let started = std::time::Instant::now();
    let data = overview_data(&core, &filters).await;
    let read = started.elapsed();
    // `?refresh=0` stops the reload (someone reading, or typing a filter).
    let refresh = match pairs.iter().find(|(k, _)| k == "refresh") {
        Some((_, v)) if v == "0" => 0,
        _ => core.settings.ui.refresh.as_secs(),
    };
    let page = render_overview(&data, group.as_deref(), &filters, refresh);
    tracing::debug!(
        probes = data.probes.len(),
        read_ms = read.as_secs_f64() * 1e3,
        render_ms = (started.elapsed() - read).as_secs_f64() * 1e3,
        "overview page"
    );
    html_response(StatusCode::OK, page)
}

/// The overview page for `data`, grouped by the label `group`.
pub fn render_overview(
    data: &OverviewData,
    group: Option<&str>,
    filters: &[(String, String)],
    refresh: u64,
) -> Markup {
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, (p, _, _)) in data.probes.iter().enumerate() {
        let key = group.map_or_else(String::new, |g| {
            p.labels
                .get(g)
                .cloned()
                .unwrap_or_else(|| format!("(no {g})"))
        });
        groups.entry(key).or_default().push(i);
    }
    // Down first, then not run yet, then up; by name within each.
    for members in groups.values_mut() {
        members.sort_by_key(|&i| {
            let (p, s, _) = &data.probes[i];
            let rank = match s.map(|s| s.up) {
                Some(false) => 0,
                None => 1,
                Some(true) => 2,
            };
            (rank, p.name.clone())
        });
    }
    let down = (data.probes.iter())
        .filter(|(_, s, _)| s.is_some_and(|s| !s.up))
        .count();
    let title = "prober: overview";
    frame(
        title,
        Some(refresh),
        false,
        html! {
            h1 { "Overview" }
            (summary_cards(data, down))
            (filter_form(data, group, filters, refresh))
            @if let Some(e) = &data.store_error {
                p.down role="alert" { "The history store cannot be read (" (e) "): the windows and bars are empty until Postgres answers; probing goes on." }
            }
            (alerts_section(&data.alerts, data.now))
            (findings_section(&data.findings))
            @for (name, members) in &groups {
                section aria-label={"Probes " (name)} {
                    @if group.is_some() {
                        h2 { (group.unwrap_or_default()) ": " (name) " " span.muted { "(" (members.len()) ")" } }
                    } @else {
                        h2 { "Probes " span.muted { "(" (members.len()) ")" } }
                    }
                    (probe_table(data, members))
                }
            }
            @if data.probes.is_empty() {
                p.muted { "No probe matches. Add probe files under the probes directory, or change the filter." }
            }
        },
    )
}

fn summary_cards(data: &OverviewData, down: usize) -> Markup {
    html! {
        div.cards {
            div.card { span.muted { "Probes" } b { (data.probes.len()) } }
            div.card { span.muted { "Down now" } b class=(if down > 0 { "down" } else { "up" }) { (down) } }
            div.card { span.muted { "Open alerts" } b class=(if data.alerts.is_empty() { "up" } else { "down" }) { (data.alerts.len()) } }
            div.card { span.muted { "Open trend findings, 7 days" } b { (data.findings.len()) @if data.findings.len() as i64 >= FINDINGS_SHOWN { "+" } } }
        }
    }
}

fn filter_form(
    data: &OverviewData,
    group: Option<&str>,
    filters: &[(String, String)],
    refresh: u64,
) -> Markup {
    let mut keys: Vec<&String> = data
        .probes
        .iter()
        .flat_map(|(p, _, _)| p.labels.keys())
        .collect();
    keys.sort();
    keys.dedup();
    let label_text = filters
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    html! {
        form.filter method="get" action="/" aria-label="Filter and group the probes" {
            label for="label" { "Label filter (key=value)" input #label name="label" value=(label_text) placeholder="team=payments"; }
            label for="group" { "Group by"
                select #group name="group" {
                    option value="" selected[group.is_none()] { "no grouping" }
                    @for k in &keys {
                        option value=(k) selected[group == Some(k.as_str())] { (k) }
                    }
                }
            }
            button type="submit" { "Apply" }
            a href="/" { "Clear" }
            @if refresh > 0 { a href="/?refresh=0" { "Stop reloading" } }
        }
    }
}

fn alerts_section(alerts: &[Alert], now: chrono::DateTime<Utc>) -> Markup {
    html! {
        @if !alerts.is_empty() {
            section aria-label="Open alerts" {
                h2 { "Open alerts" }
                div.scroll { table {
                    thead { tr { th scope="col" { "Probe" } th scope="col" { "Rule" } th scope="col" { "State" } th scope="col" { "Severity" } th scope="col" { "Since" } th scope="col" { "Last error" } } }
                    tbody {
                        @for a in alerts {
                            tr {
                                td { a href={"/probes/" (a.probe)} { (a.probe) } }
                                td { (a.rule) " @ " (a.location) }
                                td { span class=(if a.state == crate::alert::State::Firing { "down" } else { "warn" }) { (a.state.as_str()) } }
                                td { (a.severity.as_str()) }
                                td { (when(a.since)) " " span.muted { "(" (ago(a.since, now)) ")" } }
                                td { @if let Some(e) = &a.last_error { (e.class.as_str()) ": " (e.message) } }
                            }
                        }
                    }
                } }
            }
        }
    }
}

fn findings_section(findings: &[Finding]) -> Markup {
    html! {
        @if !findings.is_empty() {
            section aria-label="Recent trend findings" {
                h2 { "Recent trend findings" }
                ul.plain {
                    @for f in findings {
                        li {
                            a href={"/probes/" (f.probe)} { (f.probe) } " · "
                            span.warn { (f.kind) } " " (when(f.detected_at)) ": " (f.summary)
                        }
                    }
                }
            }
        }
    }
}

pub(super) fn bar_days(counts: Option<&Vec<DayCount>>, today: NaiveDate) -> Vec<Day> {
    let by_day: HashMap<NaiveDate, &DayCount> = counts
        .map(|c| c.iter().map(|d| (d.day, d)).collect())
        .unwrap_or_default();
    (0..BAR_DAYS)
        .rev()
        .map(|back| {
            let day = today - TimeDelta::days(back);
            let a = by_day
                .get(&day)
                .filter(|d| d.runs > 0)
                .map(|d| (d.runs - d.failures) as f64 / d.runs as f64);
            (day, a)
        })
        .collect()
}

fn probe_table(data: &OverviewData, members: &[usize]) -> Markup {
    let today = data.now.date_naive();
    html! {
        div.scroll { table {
            thead { tr {
                th scope="col" { "Probe" }
                th scope="col" { "Status" }
                th.num scope="col" { "Avail. 1 h" }
                th.num scope="col" { "24 h" }
                th.num scope="col" { "30 d" }
                th.num scope="col" { "p95 1 h" }
                th.num.hide-narrow scope="col" { "p95 24 h" }
                th.hide-narrow scope="col" { "Last 90 days" }
            } }
            tbody {
                @for &i in members {
                    @let (p, status, last) = &data.probes[i];
                    @let name = &p.name;
                    tr data-probe=(name) {
                        th scope="row" { a href={"/probes/" (name)} { (name) }
                            @if let Some(d) = &p.description { br; span.muted { (d) } } }
                        td {
                            (status_badge(status.map(|s| s.up)))
                            @if let Some(s) = status { br; span.muted { (if s.up { "up" } else { "down" }) " since " (ago(s.since, data.now)) } }
                            @if let Some(t) = last { br; span.muted { "last run " (ago(*t, data.now)) } }
                        }
                        td.num { (availability(data.hour.get(name))) }
                        td.num { (availability(data.day.get(name))) }
                        td.num { (availability(data.month.get(name))) }
                        td.num { (us(data.hour.get(name).and_then(|w| w.p95_us))) }
                        td.num.hide-narrow { (us(data.day.get(name).and_then(|w| w.p95_us))) }
                        td.hide-narrow { (day_bars(&bar_days(data.bars.get(name), today))) }
                    }
                }
            }
        } }
    }
}
