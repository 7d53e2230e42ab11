//! A timer for hyper's header timeout whose sleeps cost no system call.
//!
//! hyper arms a sleep per request head. With tokio's timer, arming one that
//! ends before the driver's next wake-up wakes the driver through its
//! eventfd: a `write(2)` and an early `epoll_wait` return on about every
//! second proxied request (seen with `strace -k`). Here a sleep is a
//! deadline in a list; one task per runtime checks the list every tick and
//! wakes what is due, so a timeout fires up to one tick late.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How often due sleeps are woken.
pub const TICK: Duration = Duration::from_millis(100);

type Registry = Arc<Mutex<Vec<Weak<Shared>>>>;

/// The timer; clones share one list.
#[derive(Clone, Default)]
pub struct CoarseTimer {
    sleeps: Registry,
}

struct Shared {
    deadline: Instant,
    waker: Mutex<Option<Waker>>,
}

/// One sleep of a [`CoarseTimer`].
pub struct CoarseSleep {
    shared: Arc<Shared>,
    sleeps: Registry,
    listed: bool,
}

impl CoarseTimer {
    /// Wake due sleeps every [`TICK`], forever: spawn it on the runtime
    /// whose connections use this timer.
    pub async fn run(self) {
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            for s in self.take_due(Instant::now()) {
                if let Some(w) = lock(&s.waker).take() {
                    w.wake();
                }
            }
        }
    }

    /// Remove and return the sleeps due at `now`, dropping forgotten ones.
    fn take_due(&self, now: Instant) -> Vec<Arc<Shared>> {
        let mut due = Vec::new();
        lock(&self.sleeps).retain(|w| match w.upgrade() {
            None => false,
            Some(s) if s.deadline <= now => {
                due.push(s);
                false
            }
            Some(_) => true,
        });
        due
    }

    fn at(&self, deadline: Instant) -> CoarseSleep {
        CoarseSleep {
            shared: Arc::new(Shared {
                deadline,
                waker: Mutex::new(None),
            }),
            sleeps: self.sleeps.clone(),
            listed: false,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.shared.deadline {
            return Poll::Ready(());
        }
        {
            let mut w = lock(&self.shared.waker);
            if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *w = Some(cx.waker().clone());
            }
        }
        if !self.listed {
            lock(&self.sleeps).push(Arc::downgrade(&self.shared));
            self.listed = true;
        }
        Poll::Pending
    }
}

impl hyper::rt::Sleep for CoarseSleep {}

impl hyper::rt::Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.at(Instant::now() + duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.at(deadline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_sleeps_are_taken_and_dropped_ones_forgotten() {
        let t = CoarseTimer::default();
        let now = Instant::now();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut soon = Box::pin(t.at(now + Duration::from_secs(1)));
        let mut later = Box::pin(t.at(now + Duration::from_secs(60)));
        let mut gone = Box::pin(t.at(now + Duration::from_secs(1)));
        for s in [&mut soon, &mut later, &mut gone] {
            assert!(s.as_mut().poll(&mut cx).is_pending());
        }
        drop(gone);
        assert_eq!(t.take_due(now).len(), 0);
        let due = t.take_due(now + Duration::from_secs(2));
        assert_eq!(
            due.len(),
            1,
            "soon only: later is not due, gone is forgotten"
        );
        assert_eq!(lock(&t.sleeps).len(), 1);
        let past = t.at(now - Duration::from_millis(1));
        assert!(Box::pin(past).as_mut().poll(&mut cx).is_ready());
    }
}
