//! The alerting types the settings build, from their homes in `config`: the
//! alert policy and silences (`policy.rs`), the receivers (`receivers.rs`), and
//! the one `${env:NAME}` expander (`template.rs`).

pub use crate::config::policy::{Policy, Silence};
pub use crate::config::receivers::{Receiver, ReceiverKind, PAGERDUTY_URL};
pub use crate::config::template::expand_env;
