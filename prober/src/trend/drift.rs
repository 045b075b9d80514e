//! Slow drifts: the Mann–Kendall trend test with a Theil–Sen slope, over
//! deseasonalised points (hourly p95s over 7 or 30 days, say).
//!
//! A change-point method sees a drift of 2 % a day as "no single step"; a rank
//! trend test sees it. Latency has a daily cycle, which over a window that does
//! not hold whole days looks like a trend. So like hours are compared: the
//! test is the seasonal Kendall test ([`seasonal_kendall`]: Mann–Kendall
//! within each hour of the day, summed), and the slope and level are read
//! by Theil–Sen from the points [`deseasonalise`]d (the hour-of-day profile
//! removed; also what the forecast extrapolates). Mann–Kendall over
//! deseasonalised points was tried first and is not valid: the profile is
//! estimated from the same points (24 of 72 degrees of freedom over three
//! days), which shrinks the noise the test's variance assumes, and in the
//! harness 16 of the 120 hourly series of the stationary probes (20 probes,
//! 6 phases) showed a drift at p < 0.001 in some window of 3 to 4 days; the
//! seasonal test, none. Points are treated as independent between days; the
//! default threshold is strict (p < 0.001) and a drift must also be large
//! enough per day to matter.

use super::{check_finite, median_in_place, pvalue, TrendError};

/// Most points [`detect`] and [`theil_sen`] accept: the pairwise slopes are
/// n²/2 floats (about 67 MB here; 170 days of hourly points).
pub const MAX_POINTS: usize = 4_096;

/// Seconds in a day, for slopes per day.
pub const DAY_SECS: f64 = 86_400.0;
const HOUR_SECS: f64 = 3_600.0;

/// One point of a series: its time in seconds since the Unix epoch (UTC) and its value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Seconds since the Unix epoch.
    pub at: f64,
    /// The value (e.g. a p95 in µs).
    pub value: f64,
}

/// The Mann–Kendall statistic of a series in time order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannKendall {
    /// Number of points.
    pub n: usize,
    /// S = Σ_{i<j} sign(x_j − x_i): positive when later values are larger.
    pub s: i64,
    /// Var(S) with the tie correction.
    pub var_s: f64,
    /// z = (S − sign(S)) / √Var(S), with the continuity correction; 0 when Var(S) is 0.
    pub z: f64,
    /// Two-sided p-value of z.
    pub p_value: f64,
}

/// The Mann–Kendall test of `values` in the order given. Fewer than two
/// points give S = 0 and p = 1; more than [`MAX_POINTS`] are refused.
pub fn mann_kendall(values: &[f64]) -> Result<MannKendall, TrendError> {
    if values.len() > MAX_POINTS {
        return Err(TrendError::TooManyPoints {
            len: values.len(),
            max: MAX_POINTS,
        });
    }
    check_finite(values.iter().copied())?;
    let n = values.len();
    let mut s: i64 = 0;
    for i in 0..n {
        for j in i + 1..n {
            s += match values[j].total_cmp(&values[i]) {
                std::cmp::Ordering::Greater => 1,
                std::cmp::Ordering::Less => -1,
                std::cmp::Ordering::Equal => 0,
            };
        }
    }
    let var_s = mk_variance(values);
    let z = if var_s > 0.0 {
        (s - s.signum()) as f64 / var_s.sqrt()
    } else {
        0.0
    };
    Ok(MannKendall {
        n,
        s,
        var_s,
        z,
        p_value: pvalue::normal_two_sided(z),
    })
}

/// The seasonal Kendall test (Hirsch, Slack & Smith 1982) with the hour of
/// the day (UTC) as the season: S is the sum over hours of Mann–Kendall's S
/// of that hour's points in time order, Var(S) the sum of their variances
/// (ties corrected within each hour). A daily cycle cancels, since only like
/// hours are compared; `n` is the number of points. More than
/// [`MAX_POINTS`] are refused.
pub fn seasonal_kendall(points: &[Point]) -> Result<MannKendall, TrendError> {
    check_points(points)?;
    let mut sorted = points.to_vec();
    sorted.sort_by(|a, b| a.at.total_cmp(&b.at));
    let mut by_hour: Vec<Vec<f64>> = vec![Vec::new(); 24];
    for p in &sorted {
        by_hour[hour_of_day(p.at)].push(p.value);
    }
    let (mut s, mut var_s) = (0i64, 0.0);
    for hour in &by_hour {
        let mk = mann_kendall(hour)?;
        s += mk.s;
        var_s += mk.var_s;
    }
    let z = if var_s > 0.0 {
        (s - s.signum()) as f64 / var_s.sqrt()
    } else {
        0.0
    };
    Ok(MannKendall {
        n: sorted.len(),
        s,
        var_s,
        z,
        p_value: pvalue::normal_two_sided(z),
    })
}

/// Var(S) = [n(n−1)(2n+5) − Σ_g t_g(t_g−1)(2t_g+5)] / 18 over tie groups g.
fn mk_variance(values: &[f64]) -> f64 {
    let f = |t: f64| t * (t - 1.0) * (2.0 * t + 5.0);
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let ties: f64 = sorted
        .chunk_by(|a, b| a == b)
        .map(|g| f(g.len() as f64))
        .sum();
    (f(values.len() as f64) - ties) / 18.0
}

/// The Theil–Sen slope: the median over pairs of points at different times of
/// (v_j − v_i) / (t_j − t_i), in value units per second. `None` when no two
/// points have different times.
pub fn theil_sen(points: &[Point]) -> Result<Option<f64>, TrendError> {
    check_points(points)?;
    let mut slopes = pair_slopes(points.iter().collect::<Vec<_>>().as_slice());
    Ok(median_in_place(&mut slopes))
}

/// Slopes of every pair of points at different times.
fn pair_slopes(points: &[&Point]) -> Vec<f64> {
    let mut slopes = Vec::new();
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            if a.at != b.at {
                slopes.push((b.value - a.value) / (b.at - a.at));
            }
        }
    }
    slopes
}

fn check_points(points: &[Point]) -> Result<(), TrendError> {
    if points.len() > MAX_POINTS {
        return Err(TrendError::TooManyPoints {
            len: points.len(),
            max: MAX_POINTS,
        });
    }
    check_finite(points.iter().map(|p| p.at))?;
    check_finite(points.iter().map(|p| p.value))
}

/// The hour of the day (UTC) of a time in seconds since the epoch.
fn hour_of_day(at: f64) -> usize {
    ((at / HOUR_SECS).floor().rem_euclid(24.0)) as usize % 24
}

/// `points` with the daily cycle removed, in the same order.
///
/// Like hours are compared: the trend b is the median slope between points of
/// the same hour of day (the seasonal Theil–Sen slope, blind to the cycle);
/// each hour's profile is the median of its points once b·t is taken out; each
/// point loses its hour's profile and gains the median profile, so the level
/// stays. A pure daily cycle becomes flat, and a drift stays whole (a profile
/// taken from raw values would absorb the drift within each day). Needs at
/// least two days; with one point per hour of day there is nothing to compare,
/// and the result is flat.
pub fn deseasonalise(points: &[Point]) -> Result<Vec<Point>, TrendError> {
    check_points(points)?;
    let Some(t0) = points.iter().map(|p| p.at).min_by(f64::total_cmp) else {
        return Ok(Vec::new());
    };
    let mut by_hour: Vec<Vec<&Point>> = vec![Vec::new(); 24];
    for p in points {
        by_hour[hour_of_day(p.at)].push(p);
    }
    let mut slopes: Vec<f64> = by_hour.iter().flat_map(|h| pair_slopes(h)).collect();
    let b = median_in_place(&mut slopes).unwrap_or(0.0);
    let profile: Vec<Option<f64>> = by_hour
        .iter()
        .map(|h| {
            let mut rest: Vec<f64> = h.iter().map(|p| p.value - b * (p.at - t0)).collect();
            median_in_place(&mut rest)
        })
        .collect();
    let mut present: Vec<f64> = profile.iter().flatten().copied().collect();
    let centre = median_in_place(&mut present).unwrap_or(0.0);
    Ok(points
        .iter()
        .map(|p| Point {
            at: p.at,
            value: p.value - profile[hour_of_day(p.at)].unwrap_or(centre) + centre,
        })
        .collect())
}

/// Settings of the drift detector.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Report a drift only when the Mann–Kendall p-value is below this (default 0.001).
    pub max_pvalue: f64,
    /// ... and its slope is at least this fraction of the median per day
    /// (default 0.005: 0.5 % a day).
    pub min_relative_per_day: f64,
    /// Compare like hours (default true): the seasonal Kendall test, and the
    /// level and slope read from [`deseasonalise`]d points. False: plain
    /// Mann–Kendall and Theil–Sen over the points as they are.
    pub deseasonalise: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_pvalue: 0.001,
            min_relative_per_day: 0.005,
            deseasonalise: true,
        }
    }
}

/// A significant slow drift.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drift {
    /// Theil–Sen slope, value units per second.
    pub slope_per_second: f64,
    /// The slope per day as a fraction of the median value.
    pub relative_per_day: f64,
    /// The median of the (deseasonalised) values.
    pub median: f64,
    /// The trend test.
    pub test: MannKendall,
}

impl Drift {
    /// The slope in value units per day.
    pub fn per_day(&self) -> f64 {
        self.slope_per_second * DAY_SECS
    }
}

/// The drift of `points` (any order; sorted by time here), if significant and
/// large enough. Fewer than three points: none.
pub fn detect(points: &[Point], config: &Config) -> Result<Option<Drift>, TrendError> {
    check_points(points)?;
    let mut sorted = points.to_vec();
    sorted.sort_by(|a, b| a.at.total_cmp(&b.at));
    if sorted.len() < 3 {
        return Ok(None);
    }
    let test = if config.deseasonalise {
        let test = seasonal_kendall(&sorted)?;
        sorted = deseasonalise(&sorted)?;
        test
    } else {
        mann_kendall(&sorted.iter().map(|p| p.value).collect::<Vec<_>>())?
    };
    let values: Vec<f64> = sorted.iter().map(|p| p.value).collect();
    let Some(slope) = theil_sen(&sorted)? else {
        return Ok(None);
    };
    let median = median_in_place(&mut values.clone()).unwrap_or(0.0);
    let relative_per_day = if median != 0.0 {
        slope * DAY_SECS / median.abs()
    } else {
        0.0
    };
    let found = test.p_value < config.max_pvalue
        && relative_per_day.abs() >= config.min_relative_per_day
        && slope.signum() == (test.s as f64).signum();
    Ok(found.then_some(Drift {
        slope_per_second: slope,
        relative_per_day,
        median,
        test,
    }))
}

/// A latency slope in µs per second, as people read it: "rising 3.1 ms/day",
/// "falling 250 µs/day", "flat".
pub fn format_per_day(slope_us_per_second: f64) -> String {
    let per_day = slope_us_per_second * DAY_SECS;
    let size = per_day.abs();
    let amount = if !size.is_finite() || size < 0.5 {
        return "flat".to_string();
    } else if size >= 1e6 {
        format!("{:.1} s", size / 1e6)
    } else if size >= 1e3 {
        format!("{:.1} ms", size / 1e3)
    } else {
        format!("{size:.0} µs")
    };
    let way = if per_day > 0.0 { "rising" } else { "falling" };
    format!("{way} {amount}/day")
}

/// The Theil–Sen line's value at time `at` (seconds): the median of
/// `value − slope·(t − at)` over `points`, the usual intercept moved to `at`.
/// `None` without points.
pub fn line_at(points: &[Point], slope_per_second: f64, at: f64) -> Option<f64> {
    let mut moved: Vec<f64> = points
        .iter()
        .map(|p| p.value - slope_per_second * (p.at - at))
        .collect();
    median_in_place(&mut moved)
}

/// Seconds until a line now at `level`, changing `slope_per_second`, reaches
/// `threshold` from below; `None` when it does not rise, is already there,
/// or would take longer than `horizon_secs`.
pub fn crossing_after(
    level: f64,
    slope_per_second: f64,
    threshold: f64,
    horizon_secs: f64,
) -> Option<f64> {
    let rising_below = slope_per_second > 0.0 && level < threshold;
    if !rising_below {
        return None;
    }
    let secs = (threshold - level) / slope_per_second;
    (secs.is_finite() && secs <= horizon_secs).then_some(secs)
}

/// A time ahead as people say it: "in about 12 days", "in about 30 hours",
/// "within the hour".
pub fn format_ahead(secs: f64) -> String {
    let hours = secs / 3_600.0;
    if hours < 1.0 {
        "within the hour".to_string()
    } else if hours < 48.0 {
        format!("in about {hours:.0} hours")
    } else {
        format!("in about {:.0} days", hours / 24.0)
    }
}

#[cfg(test)]
#[path = "drift_tests.rs"]
mod tests;
