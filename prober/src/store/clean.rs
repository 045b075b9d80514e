//! Cleaning: what Postgres refuses (NUL characters, oversized text or
//! detail) never reaches it.

use super::{MAX_DETAIL_BYTES, MAX_DETAIL_STRING_BYTES};

/// `s` without NUL characters (Postgres `text` and `jsonb` refuse them:
/// each becomes U+FFFD) and cut to at most `max` bytes on a character
/// boundary, ending in `…` when cut. Borrowed when nothing changes.
pub fn clean_text(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max && !s.contains('\0') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = s.replace('\0', "\u{FFFD}");
    if out.len() > max {
        const MARK: &str = "…";
        let mut end = max.saturating_sub(MARK.len());
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push_str(MARK);
    }
    std::borrow::Cow::Owned(out)
}

/// Cleans every string and key of a JSON value in place ([`clean_text`],
/// strings capped at `max` bytes).
pub fn clean_json(v: &mut serde_json::Value, max: usize) {
    use serde_json::Value;
    match v {
        Value::String(s) => {
            if let std::borrow::Cow::Owned(c) = clean_text(s, max) {
                *s = c;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| clean_json(i, max)),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0') || k.len() > max) {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(k, v)| (clean_text(&k, max).into_owned(), v))
                    .collect();
            }
            map.values_mut().for_each(|i| clean_json(i, max));
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// A run's detail as stored: cleaned, and replaced by a note when larger
/// than [`MAX_DETAIL_BYTES`].
pub(super) fn clean_detail(mut detail: serde_json::Value) -> serde_json::Value {
    clean_json(&mut detail, MAX_DETAIL_STRING_BYTES);
    let size = serde_json::to_vec(&detail).map_or(usize::MAX, |b| b.len());
    if size <= MAX_DETAIL_BYTES {
        return detail;
    }
    serde_json::json!({
        "omitted": format!(
            "this run's detail was {size} bytes of JSON, over the {} KiB stored per run",
            MAX_DETAIL_BYTES / 1024
        )
    })
}

/// A probe definition as stored in `probe_versions.definition` (jsonb), cleaned.
pub(super) fn clean_definition(raw: &serde_json::value::RawValue) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_str(raw.get()).unwrap_or(serde_json::Value::Null);
    // Definitions are the user's own text: keep them whole, only NULs go.
    clean_json(&mut v, usize::MAX);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MAX_ERROR_MESSAGE_BYTES;

    #[test]
    fn clean_text_replaces_nul_and_cuts_on_a_character_boundary() {
        assert!(matches!(
            clean_text("fine", 10),
            std::borrow::Cow::Borrowed("fine")
        ));
        assert_eq!(clean_text("a\0b", 10), "a\u{FFFD}b");
        // "é" is two bytes: a cut inside it moves back to its start.
        let cut = clean_text("aéééé", 5);
        assert_eq!(cut, "a…");
        assert_eq!(clean_text("aéééé", 6), "aé…");
        assert_eq!(
            clean_text(&"x".repeat(5000), MAX_ERROR_MESSAGE_BYTES).len(),
            4096
        );
    }

    #[test]
    fn clean_json_cleans_every_string_and_key_at_any_depth() {
        let mut v = serde_json::json!({
            "k\u{0}ey": ["ok", {"deep": "a\u{0}b"}],
            "n": 1,
            "long": "y".repeat(100),
        });
        clean_json(&mut v, 10);
        let text = serde_json::to_string(&v).unwrap();
        assert!(!text.contains("\\u0000"), "{text}");
        assert_eq!(v["k\u{FFFD}ey"][1]["deep"], "a\u{FFFD}b");
        assert_eq!(v["n"], 1);
        assert_eq!(v["long"].as_str().unwrap().len(), 10);
    }

    #[test]
    fn a_detail_over_the_limit_is_replaced_by_a_note_of_its_size() {
        let many: Vec<String> = (0..100).map(|_| "z".repeat(2000)).collect();
        let d = clean_detail(serde_json::json!({"steps": many}));
        assert!(d["omitted"].as_str().unwrap().contains("64 KiB"), "{d}");
        let small = clean_detail(serde_json::json!({"info": {"a": "b\u{0}"}}));
        assert_eq!(small["info"]["a"], "b\u{FFFD}");
    }
}
