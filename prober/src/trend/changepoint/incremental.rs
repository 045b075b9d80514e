//! The detector over a growing series: appended points re-analyse only the
//! windows they touch.
//!
//! A window's result depends only on the points inside it, and where the next
//! window starts depends only on earlier windows. So the full windows (all
//! `window_len` points present) stay exactly as they were; only the trailing
//! windows that were cut short by the end of the series are dropped and the
//! scan resumes from the first of them. The merge step then runs over the
//! union of weak points: linear in the series, while the windows are the
//! quadratic part. The result equals [`detect`](super::detect) on the whole
//! series.

use super::{merge, scan_windows, weak_points, ChangePoint, Config, Window};
use crate::trend::{check_finite, TrendError};

/// A series with its change points, kept up to date as points are appended.
#[derive(Debug, Clone)]
pub struct Incremental {
    config: Config,
    series: Vec<f64>,
    windows: Vec<Window>,
    points: Vec<ChangePoint>,
}

impl Incremental {
    /// An empty series analysed with `config`.
    pub fn new(config: &Config) -> Self {
        Incremental {
            config: config.effective(),
            series: Vec::new(),
            windows: Vec::new(),
            points: Vec::new(),
        }
    }

    /// Appends `values` and updates the change points. A non-finite value
    /// rejects the whole batch (nothing is appended); its index is within
    /// `values`.
    pub fn extend(&mut self, values: &[f64]) -> Result<(), TrendError> {
        check_finite(values.iter().copied())?;
        if values.is_empty() {
            return Ok(());
        }
        self.series.extend_from_slice(values);
        let full = self.config.window_len;
        let kept = self.windows.partition_point(|w| w.end - w.start == full);
        self.windows.truncate(kept);
        let resume = match self.windows.last() {
            None => 0,
            Some(w) => {
                let step = (full / 2).max(1);
                w.found.last().copied().unwrap_or(0).max(w.start + step)
            }
        };
        scan_windows(&self.series, &self.config, resume, &mut self.windows);
        self.points = merge(&self.series, weak_points(&self.windows), &self.config);
        Ok(())
    }

    /// Appends one value; see [`Incremental::extend`].
    pub fn push(&mut self, value: f64) -> Result<(), TrendError> {
        self.extend(&[value])
    }

    /// The change points of the series so far, in index order.
    pub fn change_points(&self) -> &[ChangePoint] {
        &self.points
    }

    /// The series so far.
    pub fn series(&self) -> &[f64] {
        &self.series
    }

    /// How many windows have been analysed and kept (for cost accounting).
    pub fn windows_analysed(&self) -> usize {
        self.windows.len()
    }
}
