//! A segment's frames: writing one, and walking them back.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use super::{codec, MAGIC};
use crate::run::ProbeMeta;

/// A frame's length and CRC before its kind byte and payload.
const FRAME_HEAD: usize = 8;
/// No frame is longer (a run with the largest bodies and messages the probe
/// keeps is far shorter); a longer length marks a torn or corrupt frame.
const MAX_FRAME: usize = 16 << 20;
pub(super) const KIND_META: u8 = 1;
pub(super) const KIND_RUN: u8 = 2;

const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Appends a frame: length, CRC-32C of kind and payload, kind, meta id, payload.
pub(super) fn frame(out: &mut Vec<u8>, kind: u8, meta_id: u64, payload: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[0; FRAME_HEAD]);
    out.push(kind);
    codec::put_uint(out, meta_id);
    payload(out);
    let body = &out[at + FRAME_HEAD..];
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let crc = CRC.checksum(body);
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    out[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Walks a segment's frames in order, keeping every probe identity, and
/// hands each run framed at or after byte `from` to `run` (its probe, its
/// bytes) until it returns false. Stops at a torn or corrupt frame
/// (logged); a wrong header is an error.
pub(super) fn walk(
    path: &Path,
    from: usize,
    mut run: impl FnMut(&Arc<ProbeMeta>, &[u8]) -> bool,
) -> io::Result<()> {
    let mut buf = Vec::new();
    File::open(path)?.read_to_end(&mut buf)?;
    if buf.len() < MAGIC.len() && MAGIC.starts_with(&buf) {
        // Created, then the process stopped before its header was written.
        return Ok(());
    }
    if buf.len() < MAGIC.len() || &buf[..MAGIC.len()] != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a spool segment of this format (PRSPOOL1); written by another release?",
        ));
    }
    let mut at = MAGIC.len();
    let mut metas: HashMap<u64, Arc<ProbeMeta>> = HashMap::new();
    let torn = |at: usize, why: &str| {
        tracing::warn!(segment = %path.display(), byte = at, why, "the spool segment ends in a torn or damaged frame (the process stopped mid-write): the runs before it are replayed, the rest of the segment is not");
    };
    while at < buf.len() {
        let Some(head) = buf.get(at..at + FRAME_HEAD) else {
            torn(at, "frame header cut short");
            break;
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let Some(body) = buf
            .get(at + FRAME_HEAD..at + FRAME_HEAD + len)
            .filter(|_| len <= MAX_FRAME && len > 0)
        else {
            torn(at, "frame cut short or too long");
            break;
        };
        if CRC.checksum(body) != crc {
            torn(at, "checksum mismatch");
            break;
        }
        let start = at;
        at += FRAME_HEAD + len;
        let kind = body[0];
        let (meta_id, used) = match codec::get_uint(&body[1..]) {
            Some(v) => v,
            None => {
                torn(at, "frame without a probe id");
                break;
            }
        };
        let payload = &body[1 + used..];
        match kind {
            KIND_META => match codec::decode_meta(payload) {
                Ok(m) => {
                    metas.insert(meta_id, Arc::new(m));
                }
                Err(e) => {
                    tracing::warn!(segment = %path.display(), error = %e, "a probe's identity in the spool cannot be read; its runs in this segment are skipped")
                }
            },
            KIND_RUN => match metas.get(&meta_id) {
                Some(_) if start < from => {}
                Some(m) => {
                    if !run(m, payload) {
                        break;
                    }
                }
                None => {
                    tracing::warn!(segment = %path.display(), byte = at, "a spooled run names a probe the segment does not hold; skipped")
                }
            },
            _ => {
                tracing::warn!(segment = %path.display(), byte = at, kind, "unknown frame kind in the spool; skipped")
            }
        }
    }
    Ok(())
}
