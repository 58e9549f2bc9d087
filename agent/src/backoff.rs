//! Capped exponential backoff with jitter, so a fleet of agents that lost the
//! registry at the same moment does not come back at the same moment.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, cap: Duration) -> Self {
        Backoff {
            first,
            cap,
            next: first,
        }
    }

    /// The next pause: doubling up to the cap, each drawn from 50–100% of
    /// its nominal length.
    pub fn next_pause(&mut self) -> Duration {
        let nominal = self.next;
        self.next = (self.next * 2).min(self.cap);
        nominal.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_the_cap_with_jitter_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let pauses: Vec<Duration> = (0..8).map(|_| backoff.next_pause()).collect();
        assert!(pauses[0] >= Duration::from_millis(50) && pauses[0] <= Duration::from_millis(100));
        assert!(pauses.iter().all(|p| *p <= Duration::from_secs(1)));
        assert!(pauses[7] >= Duration::from_millis(500), "{pauses:?}");
        backoff.reset();
        assert!(backoff.next_pause() <= Duration::from_millis(100));
    }
}
