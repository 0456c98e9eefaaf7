//! The wake loop's [`Clock`] on embassy-time (feature `embassy-time`): what an embassy
//! firmware passes to [`super::run_wake`], whatever its transport.

use embassy_time::{Instant as EmbassyInstant, Timer};

use super::Clock;
use crate::time::Instant;

/// embassy-time's clock, in milliseconds since boot.
#[derive(Debug, Default, Clone, Copy)]
pub struct EmbassyClock;

impl Clock for EmbassyClock {
    fn now(&self) -> Instant {
        Instant(EmbassyInstant::now().as_millis())
    }

    async fn sleep_until(&self, t: Instant) {
        Timer::at(EmbassyInstant::from_millis(t.0)).await;
    }
}
