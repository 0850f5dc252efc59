//! A connector's `rate_limit` (SPEC.md §4.2): records per second, enforced per process.
//!
//! Each limited connector has a GCRA bucket (`governor`) refilled at its rate. The bucket holds
//! one second of records or one largest batch (`limits.max_batch_records`), whichever is more:
//! any valid batch can pass once the bucket is full again, and over time the connector gets
//! exactly its rate. A batch takes its whole size at once or nothing, so a refused batch applies
//! nothing. Why per process and not shared through the database: docs/adr/0013-shared-service.md.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Why a batch was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The budget is short: retry after this long.
    RetryAfter(Duration),
    /// The batch is larger than the bucket can ever hold (only when the batch limit is above
    /// what the bucket was sized for); retrying cannot help.
    TooLarge { burst: u32 },
}

/// Per-connector record budgets of this process.
#[derive(Clone)]
pub struct RateLimiter {
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
    /// The smallest bucket: one largest batch.
    min_burst: NonZeroU32,
    clock: DefaultClock,
}

struct Bucket {
    rate: NonZeroU32,
    limiter: Arc<DefaultDirectRateLimiter>,
}

impl RateLimiter {
    /// Budgets whose buckets hold at least `max_batch_records` records.
    pub fn new(max_batch_records: usize) -> Self {
        let min_burst = u32::try_from(max_batch_records)
            .ok()
            .and_then(NonZeroU32::new)
            .unwrap_or(NonZeroU32::MIN);
        Self {
            buckets: Arc::default(),
            min_burst,
            clock: DefaultClock::default(),
        }
    }

    /// Takes `records` from `connector`'s budget at `rate` records per second (none: no limit).
    /// A changed rate (UpdateConnector) starts a fresh, full bucket at the new rate.
    pub fn admit(&self, connector: &str, rate: Option<u32>, records: usize) -> Result<(), Refusal> {
        let Some(rate) = rate.and_then(NonZeroU32::new) else {
            return Ok(());
        };
        let Some(records) = u32::try_from(records).ok().and_then(NonZeroU32::new) else {
            // An empty batch costs nothing; one beyond u32 cannot fit any bucket.
            return if records == 0 {
                Ok(())
            } else {
                Err(Refusal::TooLarge { burst: u32::MAX })
            };
        };
        let limiter = self.bucket(connector, rate);
        match limiter.check_n(records) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Refusal::RetryAfter(
                not_until.wait_time_from(self.clock.now()),
            )),
            Err(insufficient) => Err(Refusal::TooLarge {
                burst: insufficient.0,
            }),
        }
    }

    fn bucket(&self, connector: &str, rate: NonZeroU32) -> Arc<DefaultDirectRateLimiter> {
        // A poisoned lock only means another call panicked mid-insert; the map is still sound.
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        match buckets.get(connector) {
            Some(bucket) if bucket.rate == rate => bucket.limiter.clone(),
            _ => {
                let burst = rate.max(self.min_burst);
                let limiter = Arc::new(DefaultDirectRateLimiter::direct(
                    Quota::per_second(rate).allow_burst(burst),
                ));
                buckets.insert(
                    connector.to_owned(),
                    Bucket {
                        rate,
                        limiter: limiter.clone(),
                    },
                );
                limiter
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_rate_everything_passes() {
        let limiter = RateLimiter::new(10);
        for _ in 0..100 {
            assert_eq!(limiter.admit("c", None, 10_000), Ok(()));
        }
    }

    #[test]
    fn a_full_bucket_admits_one_largest_batch_then_refuses_with_a_wait() {
        let limiter = RateLimiter::new(10);
        assert_eq!(limiter.admit("c", Some(5), 10), Ok(()));
        match limiter.admit("c", Some(5), 1) {
            Err(Refusal::RetryAfter(wait)) => {
                assert!(
                    wait > Duration::ZERO && wait <= Duration::from_millis(200),
                    "{wait:?}"
                )
            }
            other => panic!("expected a wait, got {other:?}"),
        }
        // Connectors have separate budgets.
        assert_eq!(limiter.admit("other", Some(5), 10), Ok(()));
    }

    #[test]
    fn a_refused_batch_takes_nothing() {
        let limiter = RateLimiter::new(10);
        assert_eq!(limiter.admit("c", Some(1000), 1000), Ok(()));
        assert!(limiter.admit("c", Some(1000), 1000).is_err());
        // The refusal took nothing: a wait of at most the batch's own cost.
        let Err(Refusal::RetryAfter(wait)) = limiter.admit("c", Some(1000), 1000) else {
            panic!("expected a wait");
        };
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
    }

    #[test]
    fn a_new_rate_takes_effect_at_once() {
        let limiter = RateLimiter::new(1);
        assert_eq!(limiter.admit("c", Some(1), 1), Ok(()));
        assert!(limiter.admit("c", Some(1), 1).is_err());
        assert_eq!(limiter.admit("c", Some(100), 100), Ok(()));
        assert_eq!(limiter.admit("c", None, 100), Ok(()));
    }

    #[test]
    fn a_batch_above_the_bucket_is_too_large() {
        let limiter = RateLimiter::new(10);
        assert_eq!(
            limiter.admit("c", Some(5), 11),
            Err(Refusal::TooLarge { burst: 10 })
        );
    }
}
