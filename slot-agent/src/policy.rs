//! Restart decisions: pure functions from how a run ended to what happens next.

use std::time::Duration;

use slotpack_proto::protocol::RestartPolicy;

/// Restart pacing with the agent's defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// The policy.
    pub policy: RestartPolicy,
    /// Failed starts in a row before cooldown (at least 1).
    pub max_attempts: u32,
    /// Pause once the attempts are spent.
    pub cooldown: Duration,
    /// Uptime after which a start counts as good.
    pub start_secs: Duration,
    /// First backoff delay.
    pub backoff: Duration,
}

/// How a run ended, as far as the policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunEnd {
    /// How long it ran (zero: it could not be started).
    pub uptime: Duration,
    /// Exit code 0.
    pub success: bool,
    /// The agent ended it (failed pings, memory limit).
    pub killed: bool,
}

/// The shortest run that counts as a good start, whatever `startSecs` says:
/// a program that exits at once (`/bin/true` with `startSecs: 0`) backs off
/// instead of being restarted thousands of times a second.
pub const MIN_GOOD_RUN: Duration = Duration::from_secs(1);

/// A run the agent killed after at least this long starts the failure count
/// afresh (as a crash loop's back-off resets after a stable run elsewhere).
pub const STABLE_RUN: Duration = Duration::from_secs(600);

impl RunEnd {
    /// Whether the run counts as a good start: it lasted `startSecs` (and
    /// [`MIN_GOOD_RUN`]) and the agent did not have to kill it.
    pub fn started_ok(&self, p: &Pacing) -> bool {
        !self.killed && self.uptime >= p.start_secs.max(MIN_GOOD_RUN)
    }
}

/// What to do after a run ended on its own (not stopped through the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start again after the delay (zero: at once); `failed_starts` is the new count.
    Restart {
        /// Wait before the start; the state is `backoff` while it runs.
        delay: Duration,
        /// Failed starts in a row after this run.
        failed_starts: u32,
    },
    /// Attempts spent: wait, then start again with the count reset.
    Cooldown(Duration),
    /// Leave it ended: `exited` after a good run.
    Exited,
    /// Leave it ended: `fatal` after a failed start the policy will not retry.
    Fatal,
}

/// Longest single backoff delay, whatever the attempt count.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Delay before retry number `failed_starts` (1-based): `backoff * 2^(n-1)`, capped.
pub fn backoff_delay(backoff: Duration, failed_starts: u32) -> Duration {
    let shift = failed_starts.saturating_sub(1).min(20);
    backoff.saturating_mul(1u32 << shift).min(MAX_BACKOFF)
}

/// Decide what follows a run that ended, given failed starts before it.
/// Good runs restart at once; failed starts and agent kills back off, then
/// cool down once `maxAttempts` are spent.
pub fn after_exit(p: &Pacing, end: RunEnd, failed_starts_before: u32) -> Decision {
    if end.started_ok(p) {
        let restart = match p.policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !end.success,
            RestartPolicy::Never => false,
        };
        return if restart {
            Decision::Restart {
                delay: Duration::ZERO,
                failed_starts: 0,
            }
        } else {
            Decision::Exited
        };
    }
    // A failed start: the program did not stay up for start_secs.
    let retry = match p.policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => !end.success,
        RestartPolicy::Never => false,
    };
    if !retry {
        return if end.success {
            Decision::Exited
        } else {
            Decision::Fatal
        };
    }
    let failed = if end.killed && end.uptime >= STABLE_RUN {
        1
    } else {
        failed_starts_before.saturating_add(1)
    };
    if failed >= p.max_attempts.max(1) {
        Decision::Cooldown(p.cooldown)
    } else {
        Decision::Restart {
            delay: backoff_delay(p.backoff, failed),
            failed_starts: failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacing(policy: RestartPolicy) -> Pacing {
        Pacing {
            policy,
            max_attempts: 3,
            cooldown: Duration::from_secs(60),
            start_secs: Duration::from_secs(1),
            backoff: Duration::from_millis(100),
        }
    }
    const fn end(uptime_ms: u64, success: bool, killed: bool) -> RunEnd {
        RunEnd {
            uptime: Duration::from_millis(uptime_ms),
            success,
            killed,
        }
    }
    const GOOD_CRASH: RunEnd = end(5_000, false, false);
    const GOOD_CLEAN: RunEnd = end(5_000, true, false);
    const FAILED_START: RunEnd = end(200, false, false);

    #[test]
    fn good_run_restarts_at_once_and_resets_failures() {
        let d = after_exit(&pacing(RestartPolicy::Always), GOOD_CRASH, 2);
        assert_eq!(
            d,
            Decision::Restart {
                delay: Duration::ZERO,
                failed_starts: 0
            }
        );
    }

    #[test]
    fn failed_starts_back_off_exponentially_then_cool_down() {
        let p = pacing(RestartPolicy::Always);
        assert_eq!(
            after_exit(&p, FAILED_START, 0),
            Decision::Restart {
                delay: Duration::from_millis(100),
                failed_starts: 1
            }
        );
        assert_eq!(
            after_exit(&p, FAILED_START, 1),
            Decision::Restart {
                delay: Duration::from_millis(200),
                failed_starts: 2
            }
        );
        assert_eq!(
            after_exit(&p, FAILED_START, 2),
            Decision::Cooldown(Duration::from_secs(60))
        );
    }

    #[test]
    fn on_failure_leaves_clean_exits_alone() {
        let p = pacing(RestartPolicy::OnFailure);
        assert_eq!(after_exit(&p, GOOD_CLEAN, 0), Decision::Exited);
        assert!(matches!(
            after_exit(&p, GOOD_CRASH, 0),
            Decision::Restart { .. }
        ));
        let clean_fast = end(200, true, false);
        assert_eq!(after_exit(&p, clean_fast, 0), Decision::Exited);
    }

    #[test]
    fn never_restarts_nothing() {
        let p = pacing(RestartPolicy::Never);
        assert_eq!(after_exit(&p, GOOD_CRASH, 0), Decision::Exited);
        assert_eq!(after_exit(&p, FAILED_START, 0), Decision::Fatal);
    }

    #[test]
    fn one_attempt_goes_straight_to_cooldown() {
        let mut p = pacing(RestartPolicy::Always);
        p.max_attempts = 1;
        assert_eq!(
            after_exit(&p, FAILED_START, 0),
            Decision::Cooldown(Duration::from_secs(60))
        );
    }

    #[test]
    fn instant_exits_back_off_even_with_start_secs_zero() {
        let mut p = pacing(RestartPolicy::Always);
        p.start_secs = Duration::ZERO;
        let instant = end(0, true, false);
        assert_eq!(
            after_exit(&p, instant, 0),
            Decision::Restart {
                delay: Duration::from_millis(100),
                failed_starts: 1
            }
        );
        assert_eq!(after_exit(&p, instant, 2), Decision::Cooldown(p.cooldown));
        // A run past the floor is good: restart at once.
        assert!(matches!(
            after_exit(&p, end(1_500, true, false), 2),
            Decision::Restart { delay, failed_starts: 0 } if delay.is_zero()
        ));
    }

    #[test]
    fn agent_kills_back_off_and_cool_down_even_after_long_runs() {
        let p = pacing(RestartPolicy::Always);
        let killed = end(60_000, false, true);
        assert_eq!(
            after_exit(&p, killed, 0),
            Decision::Restart {
                delay: Duration::from_millis(100),
                failed_starts: 1
            }
        );
        assert_eq!(after_exit(&p, killed, 2), Decision::Cooldown(p.cooldown));
        // After a stable run the count starts again.
        let stable = end(STABLE_RUN.as_millis() as u64, false, true);
        assert!(matches!(
            after_exit(&p, stable, 2),
            Decision::Restart {
                failed_starts: 1,
                ..
            }
        ));
        // on-failure restarts kills too; never leaves them fatal.
        assert!(matches!(
            after_exit(&pacing(RestartPolicy::OnFailure), killed, 0),
            Decision::Restart { .. }
        ));
        assert_eq!(
            after_exit(&pacing(RestartPolicy::Never), killed, 0),
            Decision::Fatal
        );
    }

    #[test]
    fn backoff_is_capped() {
        let b = Duration::from_secs(1);
        assert_eq!(backoff_delay(b, 1), Duration::from_secs(1));
        assert_eq!(backoff_delay(b, 4), Duration::from_secs(8));
        assert_eq!(backoff_delay(b, 40), MAX_BACKOFF);
    }
}
