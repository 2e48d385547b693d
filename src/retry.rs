//! The connector's one retry policy: given what went wrong and how many attempts were made,
//! decide whether to try again and after how long.
//!
//! Pure on purpose: no clock, no sleep, no randomness of its own (the caller passes a random
//! `jitter`), so every path is unit-testable and the caller's loop is the only place that
//! waits. Classification of the response itself happens in [`crate::api::error::classify`];
//! this module only maps those classes to waits.

use crate::api::ApiError;

/// Limits of the retry loop. `Default` gives 5 attempts, 100 ms doubling up to 10 s, and at
/// most 60 s of waiting for one rate-limit response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first one included.
    pub max_attempts: u32,
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
    /// A 429 asking for a longer wait is not retried here; the caller reports it instead.
    pub max_rate_limit_wait_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay_ms: 100,
            max_delay_ms: 10_000,
            max_rate_limit_wait_ms: 60_000,
        }
    }
}

/// What failed.
#[derive(Debug, Clone, Copy)]
pub enum Failure<'a> {
    /// The server answered with an error.
    Api(&'a ApiError),
    /// No usable answer: connection refused, dropped or reset, or a timeout. The text is for
    /// the log line.
    Connection(&'a str),
}

/// The policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Wait `after_ms`, then send the same request again. `reason` is for the log line.
    Retry { after_ms: u64, reason: String },
    /// Return the error to the caller.
    GiveUp,
}

impl RetryPolicy {
    /// `attempt` is the number of attempts already made (1 after the first failure); `jitter`
    /// is any random `u64`.
    ///
    /// - 429: wait exactly the server's `retry_after` (Dropbox counts early retries against
    ///   the limit), unless that exceeds `max_rate_limit_wait_ms`.
    /// - 500/502/503/504 and connection failures: exponential backoff
    ///   `base * 2^(attempt-1)` capped at `max_delay_ms`, with "equal jitter" (a uniformly random
    ///   wait in the upper half), so concurrent clients spread out but never retry at once.
    /// - Anything else (400, 401, 403, 409, 422, other statuses): give up; retrying the same
    ///   request cannot help (an expired token is refreshed by the caller, not retried here).
    /// - Give up once `attempt >= max_attempts`.
    pub fn decide(&self, attempt: u32, failure: &Failure, jitter: u64) -> Decision {
        if attempt >= self.max_attempts {
            return Decision::GiveUp;
        }
        let next = format!(
            "attempt {} of {}",
            attempt.saturating_add(1),
            self.max_attempts
        );
        match failure {
            Failure::Api(ApiError::RateLimited {
                retry_after_secs,
                reason,
            }) => {
                let after_ms = retry_after_secs.saturating_mul(1000);
                if after_ms > self.max_rate_limit_wait_ms {
                    return Decision::GiveUp;
                }
                Decision::Retry {
                    after_ms,
                    reason: format!(
                        "rate limited ({reason}), Dropbox asks to wait {retry_after_secs} s; {next}"
                    ),
                }
            }
            Failure::Api(error @ ApiError::Server { status, .. }) if error.is_retryable() => {
                Decision::Retry {
                    after_ms: self.backoff_ms(attempt, jitter),
                    reason: format!("Dropbox server error {status}; {next}"),
                }
            }
            Failure::Api(_) => Decision::GiveUp,
            Failure::Connection(what) => Decision::Retry {
                after_ms: self.backoff_ms(attempt, jitter),
                reason: format!(
                    "connection failed ({}); {next}",
                    what.chars().take(200).collect::<String>()
                ),
            },
        }
    }

    /// Equal-jitter backoff: uniformly in `[cap/2, cap]`, `cap = min(base * 2^(attempt-1), max)`.
    fn backoff_ms(&self, attempt: u32, jitter: u64) -> u64 {
        let doublings = attempt.saturating_sub(1);
        let factor = 1u64.checked_shl(doublings).unwrap_or(u64::MAX);
        let cap = self
            .base_delay_ms
            .saturating_mul(factor)
            .min(self.max_delay_ms);
        let half = cap / 2;
        let span = cap - half; // the upper half, `cap - half >= half`
        half + jitter % span.saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry_ms(d: Decision) -> u64 {
        match d {
            Decision::Retry { after_ms, .. } => after_ms,
            Decision::GiveUp => panic!("gave up"),
        }
    }

    fn server(status: u16) -> ApiError {
        ApiError::Server {
            status,
            message: String::new(),
        }
    }

    #[test]
    fn rate_limit_waits_exactly_retry_after() {
        let p = RetryPolicy::default();
        let e = ApiError::RateLimited {
            retry_after_secs: 3,
            reason: "too_many_write_operations".into(),
        };
        for jitter in [0, 1, u64::MAX] {
            let d = p.decide(1, &Failure::Api(&e), jitter);
            let Decision::Retry { after_ms, reason } = d else {
                panic!("gave up")
            };
            assert_eq!(after_ms, 3000);
            assert!(
                reason.contains("too_many_write_operations") && reason.contains("attempt 2 of 5"),
                "{reason}"
            );
        }
        let e = ApiError::RateLimited {
            retry_after_secs: 60,
            reason: "too_many_requests".into(),
        };
        assert_eq!(retry_ms(p.decide(4, &Failure::Api(&e), 0)), 60_000);
        let e = ApiError::RateLimited {
            retry_after_secs: 300,
            reason: "too_many_requests".into(),
        };
        assert_eq!(p.decide(1, &Failure::Api(&e), 0), Decision::GiveUp);
        let e = ApiError::RateLimited {
            retry_after_secs: u64::MAX,
            reason: String::new(),
        };
        assert_eq!(p.decide(1, &Failure::Api(&e), 0), Decision::GiveUp);
    }

    #[test]
    fn server_errors_back_off_exponentially_with_jitter() {
        let p = RetryPolicy::default();
        for status in [500, 502, 503, 504] {
            let e = server(status);
            for (attempt, cap) in [(1u32, 100u64), (2, 200), (3, 400), (4, 800)] {
                for jitter in [0, 1, 7, 12_345, u64::MAX] {
                    let ms = retry_ms(p.decide(attempt, &Failure::Api(&e), jitter));
                    assert!((cap / 2..=cap).contains(&ms), "attempt {attempt}: {ms}");
                }
            }
            assert_eq!(retry_ms(p.decide(1, &Failure::Api(&e), 0)), 50);
            assert_eq!(retry_ms(p.decide(1, &Failure::Api(&e), 50)), 100);
        }
        let capped = RetryPolicy {
            max_attempts: 100,
            ..RetryPolicy::default()
        };
        for attempt in [8, 20, 64, 65, 99] {
            let ms = retry_ms(capped.decide(attempt, &Failure::Api(&server(503)), u64::MAX));
            assert!((5_000..=10_000).contains(&ms), "{ms}");
        }
    }

    #[test]
    fn connection_failures_are_retried() {
        let p = RetryPolicy::default();
        let d = p.decide(2, &Failure::Connection("connection reset"), 3);
        let Decision::Retry { after_ms, reason } = d else {
            panic!("gave up")
        };
        assert!((100..=200).contains(&after_ms));
        assert!(reason.contains("connection reset"));
    }

    #[test]
    fn everything_else_gives_up() {
        use crate::api::{AuthError, RouteError};
        let p = RetryPolicy::default();
        let errors = [
            ApiError::BadRequest("x".into()),
            ApiError::Auth(AuthError::ExpiredAccessToken),
            ApiError::AccessDenied("x".into()),
            ApiError::Route(RouteError::new("reset", None)),
            ApiError::PathRoot("x".into()),
            server(501),
            server(507),
            ApiError::Unexpected {
                status: 404,
                message: String::new(),
            },
        ];
        for e in &errors {
            assert_eq!(p.decide(1, &Failure::Api(e), 0), Decision::GiveUp, "{e:?}");
        }
    }

    #[test]
    fn attempts_are_bounded() {
        let p = RetryPolicy::default();
        let e = server(503);
        let rl = ApiError::RateLimited {
            retry_after_secs: 1,
            reason: String::new(),
        };
        for f in [
            Failure::Api(&e),
            Failure::Api(&rl),
            Failure::Connection("timeout"),
        ] {
            assert!(matches!(p.decide(4, &f, 0), Decision::Retry { .. }));
            assert_eq!(p.decide(5, &f, 0), Decision::GiveUp);
            assert_eq!(p.decide(u32::MAX, &f, 0), Decision::GiveUp);
        }
        // attempt 0 (nonsensical) still behaves like the first retry.
        assert_eq!(retry_ms(p.decide(0, &Failure::Api(&e), 0)), 50);
        let never = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        };
        assert_eq!(
            never.decide(1, &Failure::Connection("x"), 0),
            Decision::GiveUp
        );
        let zero = RetryPolicy {
            base_delay_ms: 0,
            max_delay_ms: 0,
            ..RetryPolicy::default()
        };
        assert_eq!(retry_ms(zero.decide(1, &Failure::Api(&e), u64::MAX)), 0);
    }
}
