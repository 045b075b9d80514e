//! The binary form of a queued run: what the queue holds in memory and the
//! spool writes to disk, one encoding for both.
//!
//! A small format of ours rather than a serde format: [`Outcome`]'s serde
//! shape is the JSON API's (milliseconds, skipped empty fields), which
//! non-self-describing formats (bincode, postcard) cannot read back, and a
//! self-describing one (CBOR, MessagePack maps) spends a field name per
//! field. Here a typical HTTP run takes ~150 bytes against ~1.9 KB as a
//! [`RunRecord`] on the heap: integers are LEB128 varints (signed ones
//! zigzag), texts are a length and UTF-8, optional values a varint where 0
//! is none, the probe's name and version are not repeated (the spool writes
//! them once per segment, the queue holds an `Arc` of them).
//!
//! Decoding trusts nothing: every length is checked against what remains,
//! and a malformed record is an error, never a panic.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::run::{
    AssertionResult, Attempt, CertInfo, ErrorClass, Outcome, Phases, ProbeError, ProbeMeta,
    RunRecord, StepOutcome, StepStatus, Trigger,
};

/// A record that cannot be read back: where, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed spool record at byte {at}: {what}")]
pub struct DecodeError {
    pub at: usize,
    pub what: &'static str,
}

/// Every error class by its stored id (the same ids as `runs.error_class`).
const CLASSES: [ErrorClass; 10] = [
    ErrorClass::Dns,
    ErrorClass::Connect,
    ErrorClass::Tls,
    ErrorClass::Timeout,
    ErrorClass::HttpStatus,
    ErrorClass::Assertion,
    ErrorClass::BodyTooLarge,
    ErrorClass::RedirectLimit,
    ErrorClass::InvalidResponse,
    ErrorClass::Config,
];

fn class_id(c: ErrorClass) -> u64 {
    // Exhaustive: a new class must be given an id here.
    match c {
        ErrorClass::Dns => 0,
        ErrorClass::Connect => 1,
        ErrorClass::Tls => 2,
        ErrorClass::Timeout => 3,
        ErrorClass::HttpStatus => 4,
        ErrorClass::Assertion => 5,
        ErrorClass::BodyTooLarge => 6,
        ErrorClass::RedirectLimit => 7,
        ErrorClass::InvalidResponse => 8,
        ErrorClass::Config => 9,
    }
}

/// Encodes `r` without its probe's identity (`r.meta`), which the caller keeps.
pub fn encode_run(r: &RunRecord, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    w.bytes(r.run_id.as_bytes());
    let scheduled = nanos(r.scheduled_at);
    w.signed(scheduled);
    w.signed(nanos(r.started_at) - scheduled);
    w.signed(r.lateness_us);
    w.uint(u64::from(r.trigger.id().unsigned_abs()));
    let o = &r.outcome;
    let same_probe = o.probe == r.meta.name;
    let same_version = o.probe_version == r.meta.version;
    let same_start = o.started_at == r.started_at;
    w.uint(
        u64::from(o.success)
            | u64::from(same_probe) << 1
            | u64::from(same_version) << 2
            | u64::from(same_start) << 3,
    );
    if !same_probe {
        w.text(&o.probe);
    }
    if !same_version {
        w.text(&o.probe_version);
    }
    if !same_start {
        w.signed(nanos(o.started_at));
    }
    w.error(o.error.as_ref());
    w.text(&o.request);
    w.opt(o.status_code.map(u64::from));
    w.phases(&o.phases);
    w.uint(o.response_bytes);
    w.opt_text(o.remote_addr.as_deref());
    w.uint(u64::from(o.redirects));
    match &o.cert {
        None => w.uint(0),
        Some(c) => {
            w.uint(1);
            w.text(&c.subject);
            w.text(&c.issuer);
            w.signed(nanos(c.not_after));
            w.signed(c.days_left);
        }
    }
    w.assertions(&o.assertions);
    w.trace_id(&o.trace_id);
    w.uint(o.steps.len() as u64);
    for s in &o.steps {
        w.text(&s.name);
        w.uint(match s.status {
            StepStatus::Passed => 0,
            StepStatus::Failed => 1,
            StepStatus::Skipped => 2,
        });
        w.error(s.error.as_ref());
        w.text(&s.request);
        w.opt(s.status_code.map(u64::from));
        w.phases(&s.phases);
        w.assertions(&s.assertions);
        w.uint(s.extracted.len() as u64);
        for e in &s.extracted {
            w.text(e);
        }
    }
    w.uint(o.attempts.len() as u64);
    for a in &o.attempts {
        w.uint(u64::from(a.attempt));
        w.uint(u64::from(a.success));
        w.error(a.error.as_ref());
        w.uint(a.total_us);
    }
    w.uint(o.info.len() as u64);
    for (k, v) in &o.info {
        w.text(k);
        w.text(v);
    }
}

/// Decodes a run encoded by [`encode_run`], giving it `meta` back.
pub fn decode_run(buf: &[u8], meta: Arc<ProbeMeta>) -> Result<RunRecord, DecodeError> {
    let mut r = Reader { buf, at: 0 };
    let run_id = Uuid::from_bytes(r.array::<16>()?);
    let scheduled_ns = r.signed()?;
    let started_ns = scheduled_ns
        .checked_add(r.signed()?)
        .ok_or(r.bad("start time out of range"))?;
    let scheduled_at = r.time(scheduled_ns)?;
    let started_at = r.time(started_ns)?;
    let lateness_us = r.signed()?;
    let trigger = Trigger::from_id(i16::try_from(r.uint()?).map_err(|_| r.bad("trigger"))?);
    let flags = r.uint()?;
    let probe = if flags & 2 != 0 {
        meta.name.clone()
    } else {
        r.text()?
    };
    let probe_version = if flags & 4 != 0 {
        meta.version.clone()
    } else {
        r.text()?
    };
    let outcome_start = if flags & 8 != 0 {
        started_at
    } else {
        let ns = r.signed()?;
        r.time(ns)?
    };
    let error = r.error()?;
    let request = r.text()?;
    let status_code = r.opt_u16()?;
    let phases = r.phases()?;
    let response_bytes = r.uint()?;
    let remote_addr = r.opt_text()?;
    let redirects = r.u32()?;
    let cert = r.cert()?;
    let assertions = r.assertions()?;
    let trace_id = r.trace_id()?;
    let mut steps = Vec::new();
    for _ in 0..r.count()? {
        steps.push(r.step()?);
    }
    let mut attempts = Vec::new();
    for _ in 0..r.count()? {
        attempts.push(Attempt {
            attempt: r.u32()?,
            success: r.uint()? != 0,
            error: r.error()?,
            total_us: r.uint()?,
        });
    }
    let mut info = BTreeMap::new();
    for _ in 0..r.count()? {
        let k = r.text()?;
        info.insert(k, r.text()?);
    }
    if r.at != buf.len() {
        return Err(r.bad("bytes after the end of the run"));
    }
    Ok(RunRecord {
        run_id,
        meta,
        scheduled_at,
        started_at,
        lateness_us,
        trigger,
        outcome: Outcome {
            probe,
            probe_version,
            started_at: outcome_start,
            success: flags & 1 != 0,
            error,
            request,
            status_code,
            phases,
            response_bytes,
            remote_addr,
            redirects,
            cert,
            assertions,
            trace_id,
            steps,
            attempts,
            info,
        },
    })
}

/// Encodes a probe's identity (the spool writes it once per segment).
pub fn encode_meta(m: &ProbeMeta, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    w.text(&m.name);
    w.text(&m.version);
    w.text(&m.source);
    w.text(m.definition.get());
}

pub fn decode_meta(buf: &[u8]) -> Result<ProbeMeta, DecodeError> {
    let mut r = Reader { buf, at: 0 };
    let name = r.text()?;
    let version = r.text()?;
    let source = r.text()?;
    let definition = r.text()?;
    let definition = serde_json::value::RawValue::from_string(definition)
        .map_err(|_| r.bad("definition is not JSON"))?;
    if r.at != buf.len() {
        return Err(r.bad("bytes after the end of the probe"));
    }
    Ok(ProbeMeta {
        name,
        version,
        definition: Arc::from(definition),
        source,
    })
}

/// Nanoseconds since the epoch (`DateTime` holds them up to the year 2262;
/// later times are clamped, as no run is scheduled there).
fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Appends `v` as a LEB128 varint (the encoding of every integer here).
pub(super) fn put_uint(out: &mut Vec<u8>, v: u64) {
    Writer(out).uint(v);
}

/// The LEB128 varint at the start of `b`: its value and its length.
pub(super) fn get_uint(b: &[u8]) -> Option<(u64, usize)> {
    let mut r = Reader { buf: b, at: 0 };
    r.uint().ok().map(|v| (v, r.at))
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn uint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn signed(&mut self, v: i64) {
        self.uint(((v << 1) ^ (v >> 63)) as u64);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }

    fn text(&mut self, s: &str) {
        self.uint(s.len() as u64);
        self.bytes(s.as_bytes());
    }

    fn opt(&mut self, v: Option<u64>) {
        self.uint(v.map_or(0, |v| v.saturating_add(1)));
    }

    fn opt_text(&mut self, s: Option<&str>) {
        match s {
            None => self.uint(0),
            Some(s) => {
                self.uint(s.len() as u64 + 1);
                self.bytes(s.as_bytes());
            }
        }
    }

    fn error(&mut self, e: Option<&ProbeError>) {
        match e {
            None => self.uint(0),
            Some(e) => {
                self.uint(class_id(e.class) + 1);
                self.text(&e.message);
            }
        }
    }

    fn phases(&mut self, p: &Phases) {
        for v in [
            p.dns_us,
            p.connect_us,
            p.tls_us,
            p.first_byte_us,
            p.transfer_us,
        ] {
            self.opt(v);
        }
        self.uint(p.total_us);
    }

    fn assertions(&mut self, a: &[AssertionResult]) {
        self.uint(a.len() as u64);
        for a in a {
            self.text(&a.check);
            self.uint(u64::from(a.passed));
            self.text(&a.expected);
            self.text(&a.actual);
        }
    }

    /// A W3C trace id (32 lowercase hex digits) as its 16 bytes; anything
    /// else (empty, when no `traceparent` was sent) as text.
    fn trace_id(&mut self, id: &str) {
        let hex = id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        match u128::from_str_radix(id, 16) {
            Ok(v) if hex => {
                self.uint(1);
                self.bytes(&v.to_be_bytes());
            }
            _ => {
                self.uint(0);
                self.text(id);
            }
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn bad(&self, what: &'static str) -> DecodeError {
        DecodeError { at: self.at, what }
    }

    fn uint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.at).ok_or(self.bad("cut short"))?;
            self.at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.bad("integer longer than 64 bits"))
    }

    fn signed(&mut self) -> Result<i64, DecodeError> {
        let v = self.uint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let v = self.uint()?;
        u32::try_from(v).map_err(|_| self.bad("number out of range"))
    }

    /// A count of items, each at least one byte: never more than what remains.
    fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.uint()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.buf.len() - self.at)
            .ok_or(self.bad("count larger than the record"))
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(self.bad("cut short"))?;
        let b = &self.buf[self.at..end];
        self.at = end;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let b = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    fn str_of(&mut self, n: usize) -> Result<String, DecodeError> {
        let at = self.at;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError {
            at,
            what: "text is not UTF-8",
        })
    }

    fn text(&mut self) -> Result<String, DecodeError> {
        let n = self.count()?;
        self.str_of(n)
    }

    fn opt(&mut self) -> Result<Option<u64>, DecodeError> {
        Ok(self.uint()?.checked_sub(1))
    }

    fn opt_u16(&mut self) -> Result<Option<u16>, DecodeError> {
        match self.opt()? {
            None => Ok(None),
            Some(v) => u16::try_from(v)
                .map(Some)
                .map_err(|_| self.bad("status code out of range")),
        }
    }

    fn opt_text(&mut self) -> Result<Option<String>, DecodeError> {
        match self.uint()?.checked_sub(1) {
            None => Ok(None),
            Some(n) => {
                let n = usize::try_from(n).map_err(|_| self.bad("text length"))?;
                self.str_of(n).map(Some)
            }
        }
    }

    fn time(&self, ns: i64) -> Result<DateTime<Utc>, DecodeError> {
        Ok(DateTime::from_timestamp_nanos(ns))
    }

    fn error(&mut self) -> Result<Option<ProbeError>, DecodeError> {
        match self.uint()?.checked_sub(1) {
            None => Ok(None),
            Some(id) => {
                let class = usize::try_from(id)
                    .ok()
                    .and_then(|i| CLASSES.get(i))
                    .copied()
                    .ok_or(self.bad("unknown error class"))?;
                Ok(Some(ProbeError {
                    class,
                    message: self.text()?,
                }))
            }
        }
    }

    fn phases(&mut self) -> Result<Phases, DecodeError> {
        Ok(Phases {
            dns_us: self.opt()?,
            connect_us: self.opt()?,
            tls_us: self.opt()?,
            first_byte_us: self.opt()?,
            transfer_us: self.opt()?,
            total_us: self.uint()?,
        })
    }

    fn cert(&mut self) -> Result<Option<CertInfo>, DecodeError> {
        if self.uint()? == 0 {
            return Ok(None);
        }
        Ok(Some(CertInfo {
            subject: self.text()?,
            issuer: self.text()?,
            not_after: {
                let ns = self.signed()?;
                self.time(ns)?
            },
            days_left: self.signed()?,
        }))
    }

    fn step(&mut self) -> Result<StepOutcome, DecodeError> {
        Ok(StepOutcome {
            name: self.text()?,
            status: match self.uint()? {
                0 => StepStatus::Passed,
                1 => StepStatus::Failed,
                2 => StepStatus::Skipped,
                _ => return Err(self.bad("step status")),
            },
            error: self.error()?,
            request: self.text()?,
            status_code: self.opt_u16()?,
            phases: self.phases()?,
            assertions: self.assertions()?,
            extracted: {
                let mut v = Vec::new();
                for _ in 0..self.count()? {
                    v.push(self.text()?);
                }
                v
            },
        })
    }

    fn assertions(&mut self) -> Result<Vec<AssertionResult>, DecodeError> {
        let mut v = Vec::new();
        for _ in 0..self.count()? {
            v.push(AssertionResult {
                check: self.text()?,
                passed: self.uint()? != 0,
                expected: self.text()?,
                actual: self.text()?,
            });
        }
        Ok(v)
    }

    fn trace_id(&mut self) -> Result<String, DecodeError> {
        match self.uint()? {
            1 => Ok(format!("{:032x}", u128::from_be_bytes(self.array::<16>()?))),
            0 => self.text(),
            _ => Err(self.bad("trace id form")),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
