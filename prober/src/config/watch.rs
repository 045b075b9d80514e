//! Hot reload triggers: file-system notifications under the probe paths and SIGHUP (being written).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::daemon::Core;

/// Starts the reload triggers; they end when `stop` is cancelled.
pub fn spawn(_core: Arc<Core>, _stop: CancellationToken) {}
