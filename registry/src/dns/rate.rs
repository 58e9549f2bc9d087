//! Response rate limiting for DNS over UDP, per source (BIND's RRL with
//! "slip 1"): a source that asks faster than `--dns-rate-limit` answers a
//! second gets, over the rate, an empty answer with the truncated bit set
//! instead of the records. That answer is no larger than the question, so
//! a forged source address buys no amplification, and a real client asks
//! again over TCP, where the connection limits apply.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use switchyard_program::sources::Source;

/// Sources followed at once. Beyond this (a flood from forged addresses),
/// a new source is answered truncated until the table has room.
const MAX_SOURCES: usize = 100_000;

/// A token bucket per source.
pub struct RateLimit {
    per_second: f64,
    buckets: Mutex<HashMap<Source, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// `per_second` answers a second per source, in bursts of as many.
    pub fn new(per_second: u32) -> Self {
        RateLimit {
            per_second: f64::from(per_second.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `source` may have a whole answer now.
    pub fn allow(&self, source: IpAddr) -> bool {
        self.allow_at(source, Instant::now())
    }

    fn allow_at(&self, source: IpAddr, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let key = Source::from(source);
        if !buckets.contains_key(&key) && buckets.len() >= MAX_SOURCES {
            // A bucket refilled to the brim is the same as none.
            let full = self.per_second;
            buckets.retain(|_, bucket| refilled(*bucket, now, full) < full);
            if buckets.len() >= MAX_SOURCES {
                return false;
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.per_second,
            at: now,
        });
        bucket.tokens = refilled(*bucket, now, self.per_second);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The tokens `bucket` holds at `now`, refilled at `rate` a second up to `rate`.
fn refilled(bucket: Bucket, now: Instant, rate: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.tokens + elapsed * rate).min(rate)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_source_gets_its_rate_and_the_others_theirs() {
        let limit = RateLimit::new(10);
        let start = Instant::now();
        let one: IpAddr = "192.0.2.1".parse().expect("ip");
        let two: IpAddr = "192.0.2.2".parse().expect("ip");
        let allowed = (0..50).filter(|_| limit.allow_at(one, start)).count();
        assert_eq!(allowed, 10, "a burst of the rate");
        assert!(
            limit.allow_at(two, start),
            "another source is not held back"
        );
        let later = start + Duration::from_millis(500);
        let allowed = (0..50).filter(|_| limit.allow_at(one, later)).count();
        assert_eq!(allowed, 5, "half a second refills half the rate");
    }

    #[test]
    fn the_table_of_sources_stays_bounded() {
        let limit = RateLimit::new(1);
        let start = Instant::now();
        for n in 0..MAX_SOURCES as u32 {
            limit.allow_at(IpAddr::from(n.to_be_bytes()), start);
        }
        let newcomer: IpAddr = "198.51.100.1".parse().expect("ip");
        assert!(
            !limit.allow_at(newcomer, start),
            "every bucket is in use: the newcomer is answered truncated"
        );
        let later = start + Duration::from_secs(2);
        assert!(
            limit.allow_at(newcomer, later),
            "refilled buckets make room"
        );
        let held = limit.buckets.lock().expect("lock").len();
        assert!(held <= 2, "{held} buckets kept");
    }
}
