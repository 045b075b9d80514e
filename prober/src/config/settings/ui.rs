//! `ui:` in `prober.yaml`: the built-in pages (`/`, `/probes/{name}`), the
//! public status page (`/status`) and the badges (`/badge/…`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::sink::Sink;

/// Most probes a status page names, and most labels it selects by.
pub const MAX_STATUS_SELECTORS: usize = 1_000;

/// `ui:` resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct UiSettings {
    /// Whether the pages are served (default true); the JSON API is served either way.
    pub enabled: bool,
    /// The label whose values group the overview (default none: one group).
    pub group_by: Option<String>,
    /// How often the overview and status page reload themselves (default 30 s; 0 turns it off).
    pub refresh: Duration,
    /// What the public status page and the badges show.
    pub status_page: StatusPage,
}

/// `ui.status_page`: the probes a page safe to expose shows. A probe is on it
/// if its name is in `probes` or it carries every one of `labels` (when some
/// are given). Nothing is selected by default: nothing is exposed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StatusPage {
    pub title: String,
    pub probes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// The label whose values group the page (default: `ui.group_by`).
    pub group_by: Option<String>,
}

impl StatusPage {
    /// Whether a probe of this name and labels is on the public page.
    pub fn shows(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.probes.iter().any(|p| p == name)
            || (!self.labels.is_empty()
                && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }

    /// The names in `probes` that none of `loaded` has (a typo there hides a
    /// probe from the page without a word otherwise).
    pub fn unknown<'a>(&'a self, loaded: &[&str]) -> Vec<&'a str> {
        (self.probes.iter())
            .filter(|p| !loaded.contains(&p.as_str()))
            .map(String::as_str)
            .collect()
    }
}

impl Default for UiSettings {
    fn default() -> Self {
        UiSettings {
            enabled: true,
            group_by: None,
            refresh: Duration::from_secs(30),
            status_page: StatusPage {
                title: "Service status".into(),
                ..StatusPage::default()
            },
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UiFile {
    pub(super) enabled: Option<bool>,
    pub(super) group_by: Option<String>,
    pub(super) refresh: Option<String>,
    pub(super) status_page: Option<StatusPageFile>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StatusPageFile {
    pub(super) title: Option<String>,
    pub(super) probes: Option<Vec<String>>,
    pub(super) labels: Option<BTreeMap<String, String>>,
    pub(super) group_by: Option<String>,
}

/// `ui:` checked: a refresh of 0 or at least 5 s, label keys not empty, bounded lists.
pub(super) fn ui_of(sink: &mut Sink, f: UiFile, d: &UiSettings) -> UiSettings {
    let refresh = sink.duration("ui.refresh", f.refresh.as_deref(), d.refresh);
    let refresh = if !refresh.is_zero() && refresh < Duration::from_secs(5) {
        sink.error(
            "ui.refresh",
            format!(
                "{} ms is too often; at least 5s, or 0 to turn the reload off (default 30s)",
                refresh.as_millis()
            ),
        );
        d.refresh
    } else {
        refresh
    };
    let label_key = |sink: &mut Sink, field: &str, key: Option<String>| {
        let key = key.map(|k| k.trim().to_string());
        if key.as_deref() == Some("") {
            sink.error(
                field,
                "is empty; write a label's key, such as team, or leave it out",
            );
            return None;
        }
        key
    };
    let group_by = label_key(sink, "ui.group_by", f.group_by);
    let s = f.status_page.unwrap_or_default();
    let probes = s.probes.unwrap_or_default();
    let labels = s.labels.unwrap_or_default();
    if probes.len() + labels.len() > MAX_STATUS_SELECTORS {
        sink.error(
            "ui.status_page",
            format!(
                "selects by {} names and labels; at most {MAX_STATUS_SELECTORS}: select by a label the probes share",
                probes.len() + labels.len()
            ),
        );
    }
    if labels.keys().any(|k| k.trim().is_empty()) {
        sink.error(
            "ui.status_page.labels",
            "a label's key is empty; write key: value",
        );
    }
    let title = s.title.unwrap_or_else(|| d.status_page.title.clone());
    if title.chars().count() > 200 {
        sink.error("ui.status_page.title", "is over 200 characters; shorten it");
    } else if title.trim().is_empty() {
        sink.error(
            "ui.status_page.title",
            "is empty; write the page's title, such as \"Example status\"",
        );
    }
    UiSettings {
        enabled: f.enabled.unwrap_or(d.enabled),
        status_page: StatusPage {
            title,
            probes,
            labels,
            group_by: label_key(sink, "ui.status_page.group_by", s.group_by)
                .or_else(|| group_by.clone()),
        },
        group_by,
        refresh,
    }
}

#[cfg(test)]
mod tests {
    use super::super::resolve_yaml as resolve;
    use super::*;

    #[test]
    fn the_pages_are_on_and_the_status_page_shows_nothing_by_default() {
        let s = resolve("location: x\n").unwrap();
        assert!(s.ui.enabled);
        assert_eq!(s.ui.refresh, Duration::from_secs(30));
        assert!(s.ui.status_page.probes.is_empty() && s.ui.status_page.labels.is_empty());
        assert!(!s.ui.status_page.shows("checkout", &BTreeMap::new()));
    }

    #[test]
    fn a_status_page_selects_by_name_or_by_every_label() {
        let s = resolve(
            "ui:\n  group_by: team\n  refresh: 0s\n  status_page:\n    title: Shop\n    probes: [home]\n    labels: {public: \"yes\", tier: web}\n",
        )
        .unwrap();
        let page = &s.ui.status_page;
        assert_eq!(
            (page.title.as_str(), page.group_by.as_deref()),
            ("Shop", Some("team"))
        );
        assert!(s.ui.refresh.is_zero(), "0 turns the reload off");
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(page.shows("home", &BTreeMap::new()));
        assert!(page.shows("api", &labels(&[("public", "yes"), ("tier", "web")])));
        assert!(
            !page.shows("api", &labels(&[("public", "yes")])),
            "every label must hold"
        );
        assert_eq!(page.unknown(&["home", "api"]), Vec::<&str>::new());
        assert_eq!(page.unknown(&["api"]), vec!["home"], "a name no probe has");
    }

    #[test]
    fn a_bad_ui_setting_is_an_error_at_its_field() {
        for (yaml, field, says) in [
            ("ui:\n  refresh: 2s\n", "ui.refresh", "at least 5s"),
            ("ui:\n  group_by: \" \"\n", "ui.group_by", "is empty"),
            (
                "ui:\n  status_page: {title: \"\"}\n",
                "ui.status_page.title",
                "is empty",
            ),
            (
                "ui:\n  status_page: {labels: {\"\": x}}\n",
                "ui.status_page.labels",
                "key is empty",
            ),
            ("ui:\n  colour: red\n", "colour", "unknown"),
        ] {
            let e = resolve(yaml).unwrap_err();
            assert!(e.contains(field) && e.contains(says), "{yaml}: {e}");
        }
    }
}
