//! Election timings and their validation.
//!
//! The three durations follow client-go's leaderelection:
//! - `lease_duration`: how long a follower waits, on its own monotonic clock, after it last
//!   saw the lease record change before it may consider the lease expired and take over.
//! - `renew_deadline`: how long a leader keeps acting without a successful renewal before it
//!   steps down on its own. It is shorter than the lease duration, so a leader that cannot
//!   reach the backend has stopped acting before any follower may take over.
//! - `retry_period`: how often a leader renews and a follower re-reads the lease when no
//!   change notification arrives.
//!
//! Rule: `lease_duration > renew_deadline > 1.2 × retry_period` (the 1.2 is client-go's
//! jitter factor: the leader must get at least one retry inside its deadline).

use std::time::Duration;

/// Election timings, validated by [`Config::new`]: a `Config` always keeps the rule (its
/// fields are private; read them with the accessors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    lease_duration: Duration,
    renew_deadline: Duration,
    retry_period: Duration,
}

/// A rule the timings break.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Lease duration must exceed the renew deadline.
    #[error(
        "invalid timings: lease duration ({lease:?}) must be greater than renew deadline ({renew:?}), so a leader steps down before followers may take over"
    )]
    LeaseNotAboveRenew {
        /// The lease duration given.
        lease: Duration,
        /// The renew deadline given.
        renew: Duration,
    },
    /// Renew deadline must exceed 1.2 × retry period.
    #[error(
        "invalid timings: renew deadline ({renew:?}) must be greater than 1.2 × retry period ({retry:?}), so a leader gets a retry before its deadline"
    )]
    RenewNotAboveRetry {
        /// The renew deadline given.
        renew: Duration,
        /// The retry period given.
        retry: Duration,
    },
    /// A zero duration.
    #[error("invalid timings: {0} must be greater than zero")]
    Zero(&'static str),
    /// A before-release hook bound that would let the hook run past the lease.
    #[error(
        "invalid before-release bound ({bound:?}): must be less than lease duration − renew deadline ({margin:?}), so the hook is done before anyone else can be granted the lease"
    )]
    BeforeReleaseTooLong {
        /// The bound given.
        bound: Duration,
        /// lease duration − renew deadline.
        margin: Duration,
    },
}

impl Default for Config {
    /// Demo-friendly defaults: 5 s / 3 s / 1 s. A crashed leader on the same host is replaced
    /// at once (file backend); a hung or partitioned one after 5 s. Production systems often
    /// use client-go's 15 s / 10 s / 2 s, trading slower takeover for tolerance of slow backends.
    fn default() -> Self {
        Config {
            lease_duration: Duration::from_secs(5),
            renew_deadline: Duration::from_secs(3),
            retry_period: Duration::from_secs(1),
        }
    }
}

impl Config {
    /// Builds a config, checking `lease_duration > renew_deadline > 1.2 × retry_period`.
    pub fn new(
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    ) -> Result<Self, ConfigError> {
        let c = Config {
            lease_duration,
            renew_deadline,
            retry_period,
        };
        c.validate()?;
        Ok(c)
    }

    /// How long a lease lasts without visible change before followers may take over.
    pub fn lease_duration(&self) -> Duration {
        self.lease_duration
    }

    /// How long a leader may go without a successful renewal before it steps down.
    pub fn renew_deadline(&self) -> Duration {
        self.renew_deadline
    }

    /// Interval between renewals (leader) and re-reads (follower).
    pub fn retry_period(&self) -> Duration {
        self.retry_period
    }

    /// Checks the rule; see the module docs. Always `Ok` for a `Config` built by
    /// [`Config::new`] or [`Config::default`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.lease_duration.is_zero() {
            return Err(ConfigError::Zero("lease duration"));
        }
        if self.renew_deadline.is_zero() {
            return Err(ConfigError::Zero("renew deadline"));
        }
        if self.retry_period.is_zero() {
            return Err(ConfigError::Zero("retry period"));
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(ConfigError::LeaseNotAboveRenew {
                lease: self.lease_duration,
                renew: self.renew_deadline,
            });
        }
        if self.renew_deadline.as_secs_f64() <= 1.2 * self.retry_period.as_secs_f64() {
            return Err(ConfigError::RenewNotAboveRetry {
                renew: self.renew_deadline,
                retry: self.retry_period,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
        Config::new(s(15.0), s(10.0), s(2.0)).unwrap();
    }

    #[test]
    fn lease_must_exceed_renew() {
        let e = Config::new(s(3.0), s(3.0), s(1.0)).unwrap_err();
        assert!(matches!(e, ConfigError::LeaseNotAboveRenew { .. }));
        assert!(
            e.to_string()
                .contains("must be greater than renew deadline")
        );
    }

    #[test]
    fn renew_must_exceed_1_2_retry() {
        let e = Config::new(s(5.0), s(1.2), s(1.0)).unwrap_err();
        assert!(matches!(e, ConfigError::RenewNotAboveRetry { .. }), "{e}");
        assert!(e.to_string().contains("1.2 × retry period"));
        Config::new(s(5.0), s(1.21), s(1.0)).unwrap();
    }

    #[test]
    fn zero_rejected() {
        assert_eq!(
            Config::new(s(5.0), s(3.0), s(0.0)).unwrap_err(),
            ConfigError::Zero("retry period")
        );
    }
}
