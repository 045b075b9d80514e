//! Limits on runs asked for through the API, per probe: at most one in flight,
//! and at least `api.run_min_interval` between the starts of two. A burst of
//! requests makes one run; the rest answer 429 with `Retry-After`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    in_flight: bool,
    last_start: Option<Instant>,
}

/// The per-probe state of API runs (one entry per probe name that was run).
#[derive(Debug, Default)]
pub struct ManualRuns {
    slots: Arc<Mutex<HashMap<String, Slot>>>,
}

/// Held while an admitted run is in flight; dropping it frees the probe.
#[derive(Debug)]
pub struct Permit {
    slots: Arc<Mutex<HashMap<String, Slot>>>,
    name: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut slots = self.slots.lock();
        if let Some(s) = slots.get_mut(&self.name) {
            s.in_flight = false;
        }
    }
}

/// Why a run was not admitted, and when to try again.
#[derive(Debug, PartialEq, Eq)]
pub enum Busy {
    /// A run of this probe is still going.
    InFlight,
    /// The last run started less than the minimum interval ago; try again in this long.
    TooSoon(Duration),
}

impl ManualRuns {
    /// Admits a run of `name` at `now`, or says why not.
    pub fn admit(&self, name: &str, min_interval: Duration, now: Instant) -> Result<Permit, Busy> {
        let mut slots = self.slots.lock();
        let slot = slots.entry(name.to_string()).or_default();
        if slot.in_flight {
            return Err(Busy::InFlight);
        }
        if let Some(last) = slot.last_start {
            let next = last + min_interval;
            if now < next {
                return Err(Busy::TooSoon(next - now));
            }
        }
        slot.in_flight = true;
        slot.last_start = Some(now);
        Ok(Permit {
            slots: self.slots.clone(),
            name: name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_in_flight_and_a_minimum_spacing_per_probe() {
        let m = ManualRuns::default();
        let t0 = Instant::now();
        let ten = Duration::from_secs(10);
        let p = m.admit("a", ten, t0).unwrap();
        assert_eq!(m.admit("a", ten, t0).unwrap_err(), Busy::InFlight);
        // Another probe is not held back.
        let q = m.admit("b", ten, t0).unwrap();
        drop(p);
        assert_eq!(
            m.admit("a", ten, t0 + Duration::from_secs(4)).unwrap_err(),
            Busy::TooSoon(Duration::from_secs(6))
        );
        assert!(m.admit("a", ten, t0 + ten).is_ok());
        drop(q);
        // No spacing: only the in-flight limit.
        let zero = Duration::ZERO;
        let r = m.admit("c", zero, t0).unwrap();
        assert_eq!(m.admit("c", zero, t0).unwrap_err(), Busy::InFlight);
        drop(r);
        assert!(m.admit("c", zero, t0).is_ok());
    }
}
