//! Reading a probe or settings file as text, bounded: never more than
//! [`MAX_FILE_BYTES`] is read, whatever the file (a 100 MB file, a device).

use std::io::Read;
use std::path::Path;

/// The largest probe or settings file read, in bytes (1 MiB; a probe is ~200 bytes).
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Why a probe or settings file could not be read as text.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Opening or reading it failed (missing, a directory, no permission, …).
    #[error("cannot read the file: {0}")]
    Io(#[source] std::io::Error),
    /// It is over [`MAX_FILE_BYTES`].
    #[error(
        "the file is larger than {} KiB, the limit for a probe or settings file; \
         split it into several files (a directory of probe files loads them all)",
        MAX_FILE_BYTES / 1024
    )]
    TooLarge,
    /// It is not UTF-8 (invalid from byte `offset` on).
    #[error("cannot read the file: it is not UTF-8 text (invalid byte at offset {offset}); save it as UTF-8")]
    NotUtf8 { offset: usize },
}

/// Reads a probe or settings file of at most [`MAX_FILE_BYTES`], reading no
/// more than that (a 100 MB file, or a device, is refused after 1 MiB + 1 byte).
pub fn read_bounded(path: &Path) -> Result<String, ReadError> {
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge);
    }
    String::from_utf8(bytes).map_err(|e| ReadError::NotUtf8 {
        offset: e.utf8_error().valid_up_to(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_files_are_refused_after_reading_the_limit() {
        let dir = std::env::temp_dir().join(format!("prober-yaml-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big.yaml");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(100 << 20).unwrap(); // sparse: 100 MB of zeros on no disk
        let err = read_bounded(&big).unwrap_err().to_string();
        assert!(err.contains("larger than 1024 KiB"), "{err}");
        let ok = dir.join("ok.yaml");
        std::fs::write(&ok, "name: a\n").unwrap();
        assert_eq!(read_bounded(&ok).unwrap(), "name: a\n");
        std::fs::write(&ok, b"name: \xff\n").unwrap();
        assert!(read_bounded(&ok)
            .unwrap_err()
            .to_string()
            .contains("not UTF-8"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
