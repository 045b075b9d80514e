//! Failure screenshots on local disk: `<browser.screenshots>/<probe>/<run id>-<attempt>.png`,
//! the newest `browser.screenshots_per_probe` kept per probe, served by
//! `GET /api/v1/probes/{name}/screenshots/{file}`.

use std::path::PathBuf;

use uuid::Uuid;

use super::pool::BrowserOptions;

/// A screenshot's file name, as [`save`] writes it and the API accepts it.
pub fn file_name(run_id: Uuid, attempt: u32) -> String {
    format!("{run_id}-{attempt}.png")
}

/// Whether `name` is a file name [`save`] could have written (the API serves no other).
pub fn is_file_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".png") else {
        return false;
    };
    let Some((id, attempt)) = stem.rsplit_once('-') else {
        return false;
    };
    Uuid::try_parse(id).is_ok_and(|u| u.hyphenated().to_string() == id)
        && !attempt.is_empty()
        && attempt.len() <= 3
        && attempt.bytes().all(|b| b.is_ascii_digit())
}

/// The file of probe `probe`'s screenshot `name` (both already checked safe).
pub fn path(opts: &BrowserOptions, probe: &str, name: &str) -> PathBuf {
    opts.screenshots.join(probe).join(name)
}

/// Writes the PNG and deletes the probe's oldest beyond the limit; the
/// run's link to it (the API's path) and the file written.
pub async fn save(
    opts: &BrowserOptions,
    probe: &str,
    run_id: Uuid,
    attempt: u32,
    png: &[u8],
) -> Result<(String, PathBuf), String> {
    let dir = opts.screenshots.join(probe);
    let name = file_name(run_id, attempt);
    let write = async {
        tokio::fs::create_dir_all(&dir).await?;
        tokio::fs::write(dir.join(&name), png).await
    };
    write.await.map_err(|e| {
        format!(
            "cannot keep the failure screenshot in {}: {e}; check browser.screenshots",
            dir.display()
        )
    })?;
    prune(&dir, opts.screenshots_per_probe.max(1)).await;
    let link = format!("/api/v1/probes/{probe}/screenshots/{name}");
    Ok((link, dir.join(name)))
}

/// Deletes the oldest screenshots of a probe's directory beyond `keep`.
async fn prune(dir: &std::path::Path, keep: usize) {
    let Ok(mut rd) = tokio::fs::read_dir(dir).await else {
        return;
    };
    let mut files = Vec::new();
    while let Ok(Some(e)) = rd.next_entry().await {
        let name = e.file_name().to_string_lossy().into_owned();
        if !is_file_name(&name) {
            continue;
        }
        if let Ok(m) = e.metadata().await {
            files.push((m.modified().ok(), name));
        }
    }
    if files.len() <= keep {
        return;
    }
    // Run ids are time-ordered (v7): the name breaks a tie in modification times.
    files.sort();
    for (_, name) in &files[..files.len() - keep] {
        let _ = tokio::fs::remove_file(dir.join(name)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_save_writes_are_served() {
        let id = Uuid::now_v7();
        assert!(is_file_name(&file_name(id, 1)));
        assert!(is_file_name(&file_name(id, 10)));
        for bad in [
            "../x.png",
            &format!("{id}-1.png/.."),
            &format!("{id}.png"),
            &format!("{id}-1.jpg"),
            &format!("{}-1.png", id.simple()),
            &format!("{id}--1.png"),
        ] {
            assert!(!is_file_name(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn the_newest_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let opts = BrowserOptions {
            screenshots: dir.path().to_path_buf(),
            screenshots_per_probe: 3,
            ..BrowserOptions::default()
        };
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
        for id in &ids {
            let (link, file) = save(&opts, "shop", *id, 1, b"png").await.unwrap();
            assert_eq!(std::fs::read(file).unwrap(), b"png");
            assert_eq!(link, format!("/api/v1/probes/shop/screenshots/{id}-1.png"));
        }
        let mut left: Vec<String> = std::fs::read_dir(dir.path().join("shop"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let want: Vec<String> = ids[2..].iter().map(|id| file_name(*id, 1)).collect();
        assert_eq!(left, want);
    }
}
