//! Where the service and the agent read the time. The core never reads a
//! clock; this crate reads it through one injectable function, so tests and
//! simulations move time by hand.

use std::sync::Arc;
use std::time::SystemTime;

use chrono::{DateTime, Utc};

/// A source of the current time (UTC). The agent's driver reads it once per
/// round; the service reads it for each connection's certificate check, each
/// request's expiry check and each frame. Tests pass a clock they move.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The wall clock (UTC): the default [`Clock`] of an agent and a service.
#[must_use]
pub fn system_clock() -> Clock {
    Arc::new(|| DateTime::<Utc>::from(SystemTime::now()))
}
