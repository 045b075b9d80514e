//! Reloading the probe files (and the alerting parts of the settings file)
//! into the running daemon. Three triggers end here: SIGHUP, a settled change
//! of the probe files (`config::watch`), and `POST /api/v1/reload` (through
//! [`Reloader`]). A valid set applies as a diff; an invalid one changes
//! nothing and its problems, each with file:line, stay in the reload status
//! (`/readyz`, `/metrics`) until fixed.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::Core;
use crate::alert::engine::EngineSettings;
use crate::api::Reloader;
use crate::config::settings::{EnvMode, Settings, SettingsArgs};
use crate::config::{load_paths, Probe};
use crate::schedule::Diff;
use crate::store::audit::AuditEntry;

impl Reloader for Core {
    fn reload(&self, trigger: &str) -> Result<Diff, Vec<String>> {
        Core::reload(self, trigger)
    }
}

impl Core {
    /// Loads the probe files (and the alerting parts of the settings file the
    /// daemon started with) again and applies them; an invalid set changes nothing.
    pub fn reload(&self, trigger: &str) -> Result<Diff, Vec<String>> {
        let report = load_paths(&self.settings.probes);
        let settings = self.settings.file.as_ref().map(|path| check_settings(path));
        let now = Utc::now();
        // One reload at a time: the status stays locked until this one is recorded.
        self.reload.update(|state| {
            state.last_attempt_at = Some(now);
            let mut errors: Vec<String> = report.errors().map(ToString::to_string).collect();
            if let Some(Err(e)) = &settings {
                errors.extend(e.iter().cloned());
            }
            if !errors.is_empty() {
                self.refuse(trigger, &errors);
                state.failed_total += 1;
                state.errors.clone_from(&errors);
                return Err(errors);
            }
            for w in report.warnings() {
                tracing::warn!("{w}");
            }
            super::warn_status_page(&self.settings, &report.probes);
            if let Some(Ok(new)) = settings {
                self.apply_settings(&new);
            }
            let diff = self.apply_probes(trigger, report.probes, &report.empty_files);
            state.succeeded_total += 1;
            state.errors.clear();
            state.last_success_at = Some(now);
            state.last_diff = Some(diff.clone());
            Ok(diff)
        })
    }

    /// Logs and audits a refused reload.
    fn refuse(&self, trigger: &str, errors: &[String]) {
        for e in errors {
            tracing::error!(
                trigger,
                "reload refused, the running probes are unchanged: {e}"
            );
        }
        self.audit.record(AuditEntry::reload(
            trigger,
            false,
            format!("refused, nothing changed: {}", errors.join("; ")),
        ));
    }

    /// Alerting only: the rest (database, listen address, limits) needs a restart.
    fn apply_settings(&self, new: &Settings) {
        self.alerts.set_settings(EngineSettings::from_settings(new));
        self.receivers.reload(new);
        tracing::info!(
            receivers = new.receivers.len(),
            silences = new.silences.len(),
            "alerting settings reloaded"
        );
    }

    /// Applies a valid probe set to the alert engine, the scheduler and the live state.
    fn apply_probes(&self, trigger: &str, mut probes: Vec<Probe>, empty: &[PathBuf]) -> Diff {
        keep_probes_of_emptied_files(&self.scheduler.probes(), empty, &mut probes);
        let names: Vec<String> = probes.iter().map(|p| p.name.clone()).collect();
        self.alerts.set_probes(&probes);
        let diff = self.scheduler.apply(probes);
        let keep: Vec<&str> = names.iter().map(String::as_str).collect();
        self.live.retain(&keep);
        tracing::info!(
            trigger,
            added = ?diff.added, removed = ?diff.removed, changed = ?diff.changed,
            unchanged = diff.unchanged,
            "probes reloaded"
        );
        self.audit.record(AuditEntry::reload(
            trigger,
            true,
            format!(
                "applied: added {:?}, removed {:?}, changed {:?}, {} unchanged",
                diff.added, diff.removed, diff.changed, diff.unchanged
            ),
        ));
        diff
    }
}

/// The same checks of the settings file as at start: every problem, each at its line.
fn check_settings(path: &std::path::Path) -> Result<Settings, Vec<String>> {
    let check = Settings::check(
        &SettingsArgs {
            config: Some(path.to_path_buf()),
            ..Default::default()
        },
        EnvMode::Require,
    );
    let errors: Vec<String> = (check.errors())
        .map(|d| format!("{d}; fix the settings file and reload again"))
        .collect();
    check.settings.ok_or(errors)
}

/// A probe file that had probes and now holds none (emptied, or only comments) is
/// most likely being rewritten in place (truncate, then write: `cat >`, `scp`, many
/// tools), so its running probes stay; removing them takes deleting the file.
/// A probe of the file that is now defined elsewhere is not kept twice.
fn keep_probes_of_emptied_files(
    running: &[Arc<Probe>],
    empty_files: &[PathBuf],
    probes: &mut Vec<Probe>,
) {
    for file in empty_files {
        let kept: Vec<Probe> = running
            .iter()
            .filter(|p| p.source.file == *file)
            .filter(|p| !probes.iter().any(|n| n.name == p.name))
            .map(|p| Probe::clone(p))
            .collect();
        if kept.is_empty() {
            continue;
        }
        let names: Vec<&str> = kept.iter().map(|p| p.name.as_str()).collect();
        tracing::warn!(
            file = %file.display(),
            probes = ?names,
            "the probe file holds no probe now; its {} probe(s) keep running, since an empty \
             file is most likely being written; to remove them, delete the file",
            kept.len()
        );
        probes.extend(kept);
    }
}

/// Starts the reload triggers, SIGHUP and the probe file watcher; they end
/// when `stop` is cancelled. Everything that can fail here is logged; the
/// daemon goes on without the trigger.
pub fn spawn_triggers(core: Arc<Core>, stop: CancellationToken) {
    spawn_sighup(core.clone(), stop.clone());
    let mut changes = crate::config::watch::spawn(core.settings.probes.clone(), stop);
    tokio::spawn(async move {
        // Ends when the watcher stops (or could not start).
        while let Some(changed) = changes.recv().await {
            tracing::debug!(paths = ?changed.paths, "probe files changed and settled");
            reload_off_thread(&core, "file-change").await;
        }
    });
}

/// Runs one reload off the async threads (it reads files); its outcome is
/// logged and recorded by [`Core::reload`].
async fn reload_off_thread(core: &Arc<Core>, trigger: &'static str) {
    let core = core.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || core.reload(trigger)).await {
        tracing::error!(trigger, "the reload did not finish: {e}");
    }
}

#[cfg(unix)]
fn spawn_sighup(core: Arc<Core>, stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    // Registered now, not in the task: a SIGHUP right after start must not kill the process.
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(
                "cannot listen for SIGHUP ({e}); probe file changes and POST /api/v1/reload still reload the probes"
            );
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                got = hup.recv() => {
                    if got.is_none() {
                        return;
                    }
                    tracing::info!("SIGHUP received: reloading the probe files");
                    reload_off_thread(&core, "sighup").await;
                }
            }
        }
    });
}

#[cfg(not(unix))]
fn spawn_sighup(_core: Arc<Core>, _stop: CancellationToken) {}
