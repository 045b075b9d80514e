//! The one place where the settings name alert and notify types: the alert
//! policy and silences they build, the receivers, and the `${env:NAME}`
//! expander. When those types move (into `config`), only these lines change.

pub use crate::alert::silence::Silence;
pub use crate::alert::Policy;
pub use crate::notify::{expand_env, Receiver, ReceiverKind, PAGERDUTY_URL};
