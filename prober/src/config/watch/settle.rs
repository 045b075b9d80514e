//! Whether the probe files have settled: their sizes and modification times
//! are read twice, [`QUIET`](super::QUIET) apart, and a reload waits until both readings
//! agree (at most [`SETTLE_LIMIT`]), so a file still being written is not
//! applied half-written.

use std::path::PathBuf;

use tokio::time::Instant;

use super::SETTLE_LIMIT;

/// The size and modification time of every probe file: what changes while one is written.
pub type Fingerprint = Vec<(PathBuf, Option<(u64, std::time::SystemTime)>)>;

/// Reads the fingerprint of the probe files under `paths` (off the async threads).
pub async fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    let paths = paths.to_vec();
    let read = move || {
        crate::config::load::probe_files(&paths)
            .into_iter()
            .map(|f| {
                let meta = std::fs::metadata(&f).ok();
                let stamp = meta.and_then(|m| Some((m.len(), m.modified().ok()?)));
                (f, stamp)
            })
            .collect()
    };
    tokio::task::spawn_blocking(read).await.unwrap_or_default()
}

/// Whether the files settled since the last look; remembers this look for the next.
#[derive(Debug, Default)]
pub struct Settle {
    /// The last reading, and when the files were first seen changing.
    last: Option<(Fingerprint, Instant)>,
}

impl Settle {
    /// True when `now`'s reading equals the last one, or the files changed for [`SETTLE_LIMIT`].
    pub fn settled(&mut self, reading: Fingerprint, now: Instant) -> bool {
        match self.last.take() {
            Some((prev, _)) if prev == reading => true,
            Some((_, since)) if now.duration_since(since) >= SETTLE_LIMIT => {
                tracing::warn!(
                    "the probe files kept changing for {}s; reloading them as they are now",
                    SETTLE_LIMIT.as_secs()
                );
                true
            }
            Some((_, since)) => {
                self.last = Some((reading, since));
                false
            }
            None => {
                self.last = Some((reading, now));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::watch::QUIET;

    #[test]
    fn a_reload_waits_for_two_equal_readings_or_the_settle_limit() {
        let t0 = Instant::now();
        let reading = |len: u64| -> Fingerprint {
            vec![(
                PathBuf::from("/p/a.yaml"),
                Some((len, std::time::SystemTime::UNIX_EPOCH)),
            )]
        };
        let mut s = Settle::default();
        assert!(
            !s.settled(reading(0), t0),
            "a first reading is never enough"
        );
        assert!(!s.settled(reading(10), t0 + QUIET), "still growing");
        assert!(s.settled(reading(10), t0 + QUIET * 2), "unchanged: settled");
        // Changing all the time: applied at the limit, counted from the first change.
        assert!(!s.settled(reading(1), t0));
        let mut applied_at = None;
        for i in 2..200u64 {
            let now = t0 + QUIET * i as u32;
            let settled = s.settled(reading(i), now);
            assert_eq!(settled, now - t0 >= SETTLE_LIMIT, "{i}");
            if settled {
                applied_at = Some(now - t0);
                break;
            }
        }
        assert_eq!(applied_at, Some(SETTLE_LIMIT));
    }
}
