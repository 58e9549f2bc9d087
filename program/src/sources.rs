//! Places counted per holder, so one client cannot take every place there
//! is: each listener (gRPC, metrics and dashboard, DNS over TCP) admits a
//! connection only while its source holds fewer than its share, and the
//! registry admits a watch stream only while its principal does.
//!
//! A source is an IPv4 address, or an IPv6 /64: one host commonly owns a
//! whole /64, so counting single IPv6 addresses would cap nobody.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Places held per key, at most `per_key` each and `total` in all.
pub struct Shares<K: Hash + Eq + Clone> {
    inner: Arc<Mutex<Counts<K>>>,
    per_key: usize,
    total: usize,
}

/// Connections per source.
pub type Sources = Shares<Source>;

struct Counts<K> {
    by_key: HashMap<K, usize>,
    total: usize,
}

/// The unit counted: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(u128);

impl From<IpAddr> for Source {
    fn from(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(v4) => Source(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(u128::from(u32::from(v4))),
                None => Source((u128::from(v6) >> 64 << 64) | 1 << 32),
            },
        }
    }
}

/// Why a place was not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every place is held.
    Full,
    /// This holder has its share.
    ShareFull,
}

impl Refused {
    /// What to log.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Full => "every place is taken",
            Refused::ShareFull => "this holder has its share",
        }
    }
}

/// One place given; it is given back when dropped.
pub struct Admitted<K: Hash + Eq + Clone> {
    shares: Shares<K>,
    key: K,
}

impl<K: Hash + Eq + Clone> Clone for Shares<K> {
    fn clone(&self) -> Self {
        Shares {
            inner: Arc::clone(&self.inner),
            per_key: self.per_key,
            total: self.total,
        }
    }
}

impl<K: Hash + Eq + Clone> Shares<K> {
    /// `per_key` and `total` of 0 are taken as 1: a limit that admits
    /// nobody is a configuration mistake, not a policy.
    pub fn new(per_key: usize, total: usize) -> Self {
        Shares {
            inner: Arc::new(Mutex::new(Counts {
                by_key: HashMap::new(),
                total: 0,
            })),
            per_key: per_key.max(1),
            total: total.max(1),
        }
    }

    /// A place for `key`, or why not.
    pub fn admit(&self, key: impl Into<K>) -> Result<Admitted<K>, Refused> {
        let key = key.into();
        let mut counts = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.total >= self.total {
            return Err(Refused::Full);
        }
        let held = counts.by_key.entry(key.clone()).or_insert(0);
        if *held >= self.per_key {
            return Err(Refused::ShareFull);
        }
        *held += 1;
        counts.total += 1;
        Ok(Admitted {
            shares: self.clone(),
            key,
        })
    }

    /// Places held now, in all.
    pub fn held(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }

    /// The share of one holder.
    pub fn per_key(&self) -> usize {
        self.per_key
    }

    /// The places in all.
    pub fn total(&self) -> usize {
        self.total
    }
}

impl<K: Hash + Eq + Clone> Drop for Admitted<K> {
    fn drop(&mut self) {
        let mut counts = self
            .shares
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(held) = counts.by_key.get_mut(&self.key) {
            *held -= 1;
            if *held == 0 {
                // Holders come and go; an entry per holder ever seen would
                // grow without bound.
                counts.by_key.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn a_source_gets_its_share_and_others_still_get_in() {
        let sources = Sources::new(2, 3);
        let first = sources.admit(ip("10.0.0.1"));
        let second = sources.admit(ip("10.0.0.1"));
        assert!(first.is_ok() && second.is_ok());
        assert_eq!(
            sources.admit(ip("10.0.0.1")).err(),
            Some(Refused::ShareFull)
        );
        let other = sources.admit(ip("10.0.0.2"));
        assert!(other.is_ok());
        assert_eq!(sources.admit(ip("10.0.0.3")).err(), Some(Refused::Full));
        drop(first);
        assert!(sources.admit(ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn a_place_given_back_forgets_the_source() {
        let sources = Sources::new(1, 10);
        for n in 0..100u8 {
            let admitted = sources.admit(IpAddr::from([10, 0, 1, n]));
            assert!(admitted.is_ok());
        }
        assert_eq!(sources.held(), 0);
        assert!(sources.inner.lock().expect("lock").by_key.is_empty());
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        let sources = Sources::new(1, 10);
        let held = sources.admit(ip("2001:db8::1"));
        assert!(held.is_ok());
        assert_eq!(
            sources.admit(ip("2001:db8::ffff:2")).err(),
            Some(Refused::ShareFull)
        );
        assert!(sources.admit(ip("2001:db8:0:1::1")).is_ok());
        let v4 = sources.admit(ip("192.0.2.7"));
        assert!(v4.is_ok());
        assert_eq!(
            sources.admit(ip("::ffff:192.0.2.7")).err(),
            Some(Refused::ShareFull)
        );
    }
}
