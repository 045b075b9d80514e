//! What a pass reads of each probe, and how: together. A read of one
//! probe's points costs about as much in Postgres planning, round trips and
//! wake-ups as a read of many probes' over the same span, and most probes
//! of a pass share their spans (the same step, the same clock). So the pass
//! asks for every span it knows its probes will need and reads each span
//! once for all of them: the light ones (a point or two of every probe, the
//! latest stored steps) for the whole pass at once, the heavy ones (the
//! periodic analyses' windows and earlier days, the drifts' hours: every
//! probe's at the first pass) for [`GROUP`] probes at a time. An analysis
//! then takes its points from what was read, and reads for itself only
//! what no one could know ahead (a called analysis' window that was not
//! held) or what a failed read left out.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::drifts::DRIFT_WINDOW;
use super::hold::Held;
use super::hourly::Hourly;
use super::screen::{self, Plan};
use super::window::StepWindow;
use super::SEASON_DAYS;
use crate::store::trends::{Subject, TrendPoint};
use crate::store::{Store, StoreError};

/// Most probes whose spans one read fetches.
const BATCH_READ: usize = 1_000;

/// Probes whose heavy spans are read ahead together: what those reads hold
/// at once (a probe's window and earlier days are 0.2–1 MB, its week of
/// hours about 0.2 MB).
pub const GROUP: usize = 64;

/// The step of the drifts' points.
const HOUR: Duration = Duration::from_secs(3600);

/// One probe and location's points over `[from, to)` at a step.
pub type Span = ((i32, i16), DateTime<Utc>, DateTime<Utc>, Duration);

/// The heavy spans of a probe read ahead: on a `Full` plan today's window
/// `w` and the earlier days', and `hours`, the span of its drift's hourly
/// points when they are due.
pub fn heavy_spans(
    key: (i32, i16),
    w: &StepWindow,
    plan: Plan,
    hours: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> Vec<Span> {
    let mut out = Vec::new();
    if plan == Plan::Full {
        out.push((key, w.from, w.to, w.step));
        for (from, to) in earlier_spans(w) {
            out.push((key, from, to, w.step));
        }
    }
    if let Some((from, to)) = hours {
        out.push((key, from, to, HOUR));
    }
    out
}

/// The spans of the earlier days read with the window `w`: the same clock
/// times, [`screen::read_ahead`] past it (the screen's bases).
fn earlier_spans(w: &StepWindow) -> impl Iterator<Item = (DateTime<Utc>, DateTime<Utc>)> + '_ {
    let to = w.to + screen::read_ahead();
    (1..=SEASON_DAYS).map(move |day| {
        let back = TimeDelta::days(day);
        (w.from - back, to - back)
    })
}

/// Where a drift's hourly points up to `to` are read from: where `kept`
/// asks to be extended from (`hourly.rs`), or the whole window's start.
pub fn hours_from(kept: Option<&Hourly>, q: Option<f64>, to: DateTime<Utc>) -> DateTime<Utc> {
    let window = to - DRIFT_WINDOW;
    kept.and_then(|k| k.read_from(q, to))
        .map_or(window, |r| r.max(window))
}

/// The latest stored step of each probe and location's total p50.
type Steps = HashMap<(i32, i16), DateTime<Utc>>;

/// Points read ahead, by span, and the latest stored steps.
#[derive(Debug, Default)]
pub struct Ahead {
    points: HashMap<Span, Vec<TrendPoint>>,
    /// The latest p50 step of each probe's total at or after the time
    /// given (`Store::latest_steps`); `None` when that read failed.
    steps: Option<(DateTime<Utc>, Steps)>,
}

impl Ahead {
    /// Reads `spans` (see [`Ahead::add`]), and the latest steps of `keys`
    /// since `steps_from`.
    pub async fn read(
        store: &Store,
        spans: Vec<Span>,
        keys: &[(i32, i16)],
        steps_from: DateTime<Utc>,
    ) -> Ahead {
        let steps = match store.latest_steps(keys, steps_from).await {
            Ok(steps) => Some((steps_from, steps)),
            Err(e) => {
                tracing::warn!(error = %e, probes = keys.len(),
                    "reading the latest steps together failed; each probe reads its own this pass");
                None
            }
        };
        let mut ahead = Ahead {
            points: HashMap::new(),
            steps,
        };
        ahead.add(store, spans).await;
        ahead
    }

    /// Reads `spans` together: one read per (from, to, step) for up to
    /// [`BATCH_READ`] probes. A read that fails leaves its spans out (this
    /// logs why): their probes read their own in [`Ahead::points`].
    pub async fn add(&mut self, store: &Store, spans: Vec<Span>) {
        type Shared = (DateTime<Utc>, DateTime<Utc>, Duration);
        let mut groups: HashMap<Shared, Vec<(i32, i16)>> = HashMap::new();
        for (key, from, to, step) in spans {
            groups.entry((from, to, step)).or_default().push(key);
        }
        for ((from, to, step), mut keys) in groups {
            keys.sort_unstable();
            keys.dedup();
            for chunk in keys.chunks(BATCH_READ) {
                match store.trend_points_of(chunk, from, to, step).await {
                    Ok(mut found) => self.points.extend(
                        chunk
                            .iter()
                            .map(|k| ((*k, from, to, step), found.remove(k).unwrap_or_default())),
                    ),
                    Err(e) => tracing::warn!(error = %e, probes = chunk.len(),
                        "reading trend points together failed; each probe reads its own this pass"),
                }
            }
        }
    }

    /// The latest change time of a step of the total's p50 stored for
    /// `key` at or after `from`: as read ahead, or read now.
    pub async fn latest_step(
        &self,
        store: &Store,
        key: (i32, i16),
        from: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let latest = match &self.steps {
            Some((read_from, steps)) if *read_from <= from => steps.get(&key).copied(),
            _ => store.latest_steps(&[key], from).await?.remove(&key),
        };
        Ok(latest.filter(|t| *t >= from))
    }

    /// One probe's points of `[from, to)` at `step`: as read ahead, or read now.
    pub async fn points(
        &mut self,
        store: &Store,
        key: (i32, i16),
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step: Duration,
    ) -> Result<Vec<TrendPoint>, StoreError> {
        match self.points.remove(&(key, from, to, step)) {
            Some(points) => Ok(points),
            None => store.trend_points(key.0, key.1, from, to, step).await,
        }
    }

    /// Today's points of the step window `w`, and those at the same clock
    /// times on each of the [`SEASON_DAYS`] earlier days (yesterday first),
    /// [`screen::read_ahead`] past it: the daily cycle a step is judged
    /// against, and the screen's bases of the points to come.
    pub async fn window(
        &mut self,
        store: &Store,
        s: &Subject,
        w: &StepWindow,
    ) -> Result<Held, StoreError> {
        let key = (s.probe_id, s.location_id);
        let points = self.points(store, key, w.from, w.to, w.step).await?;
        let mut days = Vec::with_capacity(SEASON_DAYS as usize);
        for (from, to) in earlier_spans(w) {
            days.push(self.points(store, key, from, to, w.step).await?);
        }
        Ok(Held::new(w, w.to + screen::read_ahead(), points, days))
    }

    /// The hourly points of the last [`DRIFT_WINDOW`] up to `to` (the last
    /// closed hour), the total kept at `q`: `kept` extended by the hours
    /// closed since (`hourly.rs`), or read whole; `from` is where
    /// [`hours_from`] said to read from, as the pass read ahead.
    pub async fn hours(
        &mut self,
        store: &Store,
        key: (i32, i16),
        q: Option<f64>,
        (from, to): (DateTime<Utc>, DateTime<Utc>),
        kept: Option<Hourly>,
    ) -> Result<Hourly, StoreError> {
        let read_from = kept.as_ref().and_then(|k| k.read_from(q, to));
        let read = self.points(store, key, from, to, HOUR).await?;
        Ok(match (kept, read_from) {
            (Some(mut kept), Some(read_from)) => {
                kept.extend(&read, read_from, to - DRIFT_WINDOW, to);
                kept
            }
            _ => Hourly::of(&read, q, to),
        })
    }
}
