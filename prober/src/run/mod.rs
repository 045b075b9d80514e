//! The run vocabulary every layer speaks: a run's [`Outcome`] (a failure is data,
//! with an [`ErrorClass`]), its phases, and the [`RunRecord`] that is stored.
//! A leaf: it imports nothing from the rest of the crate.

pub mod outcome;
pub mod record;

pub use outcome::{
    excerpt, ms, AssertionResult, Attempt, CertInfo, ErrorClass, Outcome, Phases, ProbeError,
    StepOutcome, StepStatus,
};
pub use record::{
    phase_samples, span_id, tick_run_id, trace_id, vital_name, vital_samples, ProbeMeta, RunRecord,
    Trigger, PHASES, VITALS,
};
