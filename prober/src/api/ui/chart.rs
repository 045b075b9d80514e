//! Charts drawn on the server as SVG: the latency percentiles over a range
//! (with markers for findings, events and alerts), the 90-day availability
//! bar, and a run's phases as a waterfall. No script draws them, so they
//! show with JavaScript off, and each has a text alternative.

use chrono::{DateTime, NaiveDate, Utc};
use maud::{html, Markup};

use crate::analysis::series::human_us;
use crate::store::read::LatencyPoint;

/// The latency chart's drawing box (it scales to its container).
const W: f64 = 800.0;
const H: f64 = 260.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 26.0;

/// Up to this many points a chart also draws each point as a dot.
const DOTS_UP_TO: usize = 60;

/// Something that happened at a time, drawn as a vertical line on the chart.
#[derive(Debug, Clone)]
pub struct Marker {
    pub at: DateTime<Utc>,
    /// `trend`, `event` or `alert`: its colour.
    pub kind: &'static str,
    pub label: String,
}

/// A round top for the y axis: 1, 2 or 5 times a power of ten, at least `max`.
fn nice_ceiling(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|v| *v >= max)
        .unwrap_or(10.0 * p)
}

/// p50, p95 and p99 of `points` from `from` to `to`, with `markers`.
pub fn latency(
    points: &[LatencyPoint],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    markers: &[Marker],
) -> Markup {
    let span = (to - from).num_milliseconds().max(1) as f64;
    let x = |t: DateTime<Utc>| {
        LEFT + (W - LEFT - RIGHT) * ((t - from).num_milliseconds() as f64 / span)
    };
    let top_us = nice_ceiling(
        points
            .iter()
            .filter_map(|p| p.p99_us.or(p.p95_us))
            .max()
            .unwrap_or(0) as f64,
    );
    let y = |us: i64| TOP + (H - TOP - BOTTOM) * (1.0 - us as f64 / top_us);
    let line = |pick: fn(&LatencyPoint) -> Option<i64>| {
        points
            .iter()
            .filter_map(|p| Some(format!("{:.1},{:.1}", x(p.time), y(pick(p)?))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let lines: [(&str, String); 3] = [
        ("p50", line(|p| p.p50_us)),
        ("p95", line(|p| p.p95_us)),
        ("p99", line(|p| p.p99_us)),
    ];
    let ticks = 5;
    let label = if span > 2.0 * 86_400_000.0 {
        "%m-%d"
    } else {
        "%H:%M"
    };
    let summary = format!(
        "Latency p50, p95 and p99 from {} to {} UTC, {} points, up to {}",
        from.format("%Y-%m-%d %H:%M"),
        to.format("%Y-%m-%d %H:%M"),
        points.len(),
        human_us(top_us)
    );
    html! {
        svg.chart viewBox={"0 0 " (W) " " (H)} role="img" aria-label=(summary) xmlns="http://www.w3.org/2000/svg" {
            title { (summary) }
            @for i in 0..=4 {
                @let us = top_us * f64::from(i) / 4.0;
                @let yy = TOP + (H - TOP - BOTTOM) * (1.0 - f64::from(i) / 4.0);
                line.grid x1=(LEFT) x2=(W - RIGHT) y1=(yy) y2=(yy) {}
                text.axis x=(LEFT - 6.0) y=(yy + 4.0) text-anchor="end" { (human_us(us)) }
            }
            @for i in 0..=ticks {
                @let t = from + (to - from) * i / ticks;
                text.axis x=(x(t)) y=(H - 8.0) text-anchor="middle" { (t.format(label)) }
            }
            @for m in markers.iter().filter(|m| m.at >= from && m.at <= to) {
                g.marker data-kind=(m.kind) {
                    title { (m.label) }
                    line class={"mark-" (m.kind)} x1=(x(m.at)) x2=(x(m.at)) y1=(TOP) y2=(H - BOTTOM) {}
                }
            }
            @for (name, pts) in &lines {
                @if !pts.is_empty() {
                    polyline class={"series line-" (name)} data-series=(name) points=(pts) {}
                }
            }
            // Few points: each drawn as a dot too (a line needs two).
            @if points.len() <= DOTS_UP_TO {
                @for (i, pick) in [|p: &LatencyPoint| p.p50_us, |p: &LatencyPoint| p.p95_us, |p: &LatencyPoint| p.p99_us].iter().enumerate() {
                    @for p in points {
                        @if let Some(v) = pick(p) {
                            circle class={"dot-" (i)} cx=(format!("{:.1}", x(p.time))) cy=(format!("{:.1}", y(v))) r="2.5" {}
                        }
                    }
                }
            }
        }
        p.legend {
            span { i.key-p50 {} "p50" }
            span { i.key-p95 {} "p95" }
            span { i.key-p99 {} "p99" }
            span { i.key-trend {} "trend finding" }
            span { i.key-event {} "event" }
            span { i.key-alert {} "alert" }
        }
    }
}

/// One day's availability (successful runs ÷ runs), `None` without runs.
pub type Day = (NaiveDate, Option<f64>);

/// The colour class of an availability: up from 99.9 %, warn from 99 %, else down.
pub fn availability_class(a: Option<f64>) -> &'static str {
    match a {
        None => "muted",
        Some(a) if a >= 0.999 => "up",
        Some(a) if a >= 0.99 => "warn",
        Some(_) => "down",
    }
}

/// Consecutive days of the same colour, as `(first index, days, class,
/// worst availability)`: one rectangle each, so a steady probe's 90 days
/// take a few elements, not 90 (the overview of 1,000 probes stays small).
fn segments(days: &[Day]) -> Vec<(usize, usize, &'static str, Option<f64>)> {
    let mut out: Vec<(usize, usize, &'static str, Option<f64>)> = Vec::new();
    for (i, (_, a)) in days.iter().enumerate() {
        let class = availability_class(*a);
        match out.last_mut() {
            Some(s) if s.2 == class => {
                s.1 += 1;
                s.3 = match (s.3, *a) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                };
            }
            _ => out.push((i, 1, class, *a)),
        }
    }
    out
}

/// A row of bars, one a day, oldest first; days of the same colour in a
/// row are one bar, whose tooltip gives its days and worst availability.
pub fn day_bars(days: &[Day]) -> Markup {
    let n = days.len().max(1);
    let known: Vec<f64> = days.iter().filter_map(|d| d.1).collect();
    let summary = match known.len() {
        0 => format!("no runs in the last {} days", days.len()),
        k => format!(
            "{} days with runs of {}; worst day {:.2} %",
            k,
            days.len(),
            known.iter().copied().fold(1.0, f64::min) * 100.0
        ),
    };
    let tip = |first: usize, len: usize, worst: Option<f64>| {
        let day = |i: usize| days[i].0.format("%Y-%m-%d").to_string();
        let value = worst.map_or_else(|| "no runs".to_string(), |a| format!("{:.3} %", a * 100.0));
        if len == 1 {
            format!("{}: {value}", day(first))
        } else {
            format!(
                "{} – {}: {len} days, worst {value}",
                day(first),
                day(first + len - 1)
            )
        }
    };
    html! {
        svg.bar viewBox={"0 0 " (n * 5) " 18"} preserveAspectRatio="none" role="img" aria-label=(summary) {
            @for (first, len, class, worst) in segments(days) {
                rect class={"fill-" (class)} x=(first * 5) width=(len * 5 - 1) height="18" {
                    title { (tip(first, len, worst)) }
                }
            }
        }
    }
}

/// A run's phases laid end to end, scaled so `scale_us` fills the box:
/// DNS, connect, TLS, first byte, transfer (`phases_us` in `PHASES` order).
pub fn waterfall(phases_us: &[Option<i32>; 6], scale_us: f64) -> Markup {
    const PARTS: [(usize, &str, &str); 5] = [
        (1, "dns", "fill-muted"),
        (2, "connect", "fill-p95"),
        (3, "tls", "fill-warn"),
        (4, "first_byte", "fill-p50"),
        (5, "transfer", "fill-up"),
    ];
    let scale = if scale_us > 0.0 {
        200.0 / scale_us
    } else {
        0.0
    };
    let mut at = 0.0;
    let mut parts = Vec::new();
    for (i, name, colour) in PARTS {
        if let Some(us) = phases_us[i].filter(|us| *us > 0) {
            let width = f64::from(us) * scale;
            parts.push((at, width.max(0.5), name, colour, us));
            at += width;
        }
    }
    let text = parts
        .iter()
        .map(|p| format!("{} {}", p.2, human_us(f64::from(p.4))))
        .collect::<Vec<_>>()
        .join(", ");
    let text = if text.is_empty() {
        "no phases recorded".to_string()
    } else {
        text
    };
    html! {
        svg.waterfall viewBox="0 0 200 10" preserveAspectRatio="none" role="img" aria-label=(text) {
            @for (x, width, name, colour, us) in &parts {
                rect class=(colour) x=(format!("{x:.2}")) y="0" width=(format!("{width:.2}")) height="10" data-phase=(name) {
                    title { (name) " " (human_us(f64::from(*us))) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_y_axis_tops_at_a_round_value_above_the_highest_point() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(130_000.0), 200_000.0);
        assert_eq!(nice_ceiling(99.0), 100.0);
        assert_eq!(nice_ceiling(501.0), 1_000.0);
    }

    #[test]
    fn days_of_one_colour_in_a_row_are_one_bar_with_the_worst_day() {
        let d = |i: u32| NaiveDate::from_ymd_opt(2026, 11, i).unwrap();
        let days = vec![
            (d(1), None),
            (d(2), Some(1.0)),
            (d(3), Some(0.9995)),
            (d(4), Some(0.97)),
            (d(5), Some(1.0)),
        ];
        assert_eq!(
            segments(&days),
            vec![
                (0, 1, "muted", None),
                (1, 2, "up", Some(0.9995)),
                (3, 1, "down", Some(0.97)),
                (4, 1, "up", Some(1.0))
            ]
        );
        let svg = day_bars(&days).into_string();
        assert!(
            svg.contains("2026-11-02 – 2026-11-03: 2 days, worst 99.950 %"),
            "{svg}"
        );
        assert!(svg.contains("2026-11-04: 97.000 %"), "{svg}");
        assert_eq!(svg.matches("<rect").count(), 4);
    }

    #[test]
    fn a_waterfall_lays_the_phases_end_to_end_and_skips_those_not_reached() {
        let svg = waterfall(
            &[Some(300), Some(100), None, Some(0), Some(150), Some(50)],
            300.0,
        )
        .into_string();
        assert!(svg.contains(r#"x="0.00" y="0" width="66.67""#), "{svg}");
        assert!(svg.contains(r#"x="66.67" y="0" width="100.00""#), "{svg}");
        assert!(!svg.contains("data-phase=\"tls\"") && !svg.contains("data-phase=\"connect\""));
        assert!(svg.contains("data-phase=\"first_byte\"") && svg.contains("transfer 50 µs"));
    }
}
