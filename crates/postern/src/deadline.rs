//! Timeouts armed only when an operation has to wait. Most writes of a
//! proxied response complete at once; reading the clock and registering a
//! timer for each of them cost more than the write's own bookkeeping.

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Like `tokio::time::timeout`, but polls `fut` once before the timer exists:
/// the limit then counts from the first time `fut` could not finish.
pub async fn within<F: Future>(limit: Duration, fut: F) -> Result<F::Output, TimedOut> {
    let mut fut = pin!(fut);
    if let Poll::Ready(out) = poll_once(fut.as_mut()).await {
        return Ok(out);
    }
    wait_after_pending(fut, pin!(tokio::time::sleep(limit))).await
}

/// Polls `fut` once, with the calling task's waker.
async fn poll_once<F: Future>(mut fut: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
}

/// Waits for `fut`, which has just been polled and is pending (so its waker
/// is registered: polling it again at once would only repeat the work), or
/// for `sleep`.
async fn wait_after_pending<F: Future>(
    mut fut: Pin<&mut F>,
    mut sleep: Pin<&mut Sleep>,
) -> Result<F::Output, TimedOut> {
    let mut just_polled = true;
    std::future::poll_fn(|cx| {
        if !std::mem::take(&mut just_polled)
            && let Poll::Ready(out) = fut.as_mut().poll(cx)
        {
            return Poll::Ready(Ok(out));
        }
        sleep.as_mut().poll(cx).map(|()| Err(TimedOut))
    })
    .await
}

/// The limit passed before the operation finished.
#[derive(Debug)]
pub struct TimedOut;

/// A timer kept for one kind of wait on one connection (the client's next
/// request, a server's answer). Re-arming it to a later deadline while it is
/// still in the timer wheel only records the new deadline; a fresh timer per
/// wait is inserted into the wheel and taken out again every time.
#[derive(Default)]
pub struct Timer(Option<Pin<Box<Sleep>>>);

impl Timer {
    /// Like [`within`]: `fut` is polled once before the timer is armed, and
    /// `limit` counts from the first time it could not finish.
    pub async fn within<F: Future>(
        &mut self,
        limit: Duration,
        fut: F,
    ) -> Result<F::Output, TimedOut> {
        let mut fut = pin!(fut);
        if let Poll::Ready(out) = poll_once(fut.as_mut()).await {
            return Ok(out);
        }
        let deadline = Instant::now() + limit;
        let sleep = match &mut self.0 {
            Some(sleep) => {
                sleep.as_mut().reset(deadline);
                sleep
            }
            None => self.0.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        wait_after_pending(fut, sleep.as_mut()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_at_once_and_timing_out() {
        assert_eq!(within(Duration::ZERO, async { 7 }).await.ok(), Some(7));
        let never = std::future::pending::<()>();
        assert!(within(Duration::from_millis(20), never).await.is_err());
        let later = tokio::time::sleep(Duration::from_millis(10));
        assert!(within(Duration::from_secs(5), later).await.is_ok());
    }

    #[tokio::test]
    async fn a_kept_timer_rearms_for_each_wait() {
        let mut timer = Timer::default();
        assert_eq!(
            timer.within(Duration::ZERO, async { 7 }).await.ok(),
            Some(7)
        );
        let never = std::future::pending::<()>();
        assert!(
            timer
                .within(Duration::from_millis(20), never)
                .await
                .is_err()
        );
        // Elapsed once, it arms again; then a later deadline replaces an
        // earlier one that has not come yet.
        let later = tokio::time::sleep(Duration::from_millis(10));
        assert!(timer.within(Duration::from_secs(5), later).await.is_ok());
        let later = tokio::time::sleep(Duration::from_millis(10));
        assert!(timer.within(Duration::from_secs(10), later).await.is_ok());
        let never = std::future::pending::<()>();
        let started = Instant::now();
        assert!(
            timer
                .within(Duration::from_millis(30), never)
                .await
                .is_err()
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "an earlier deadline must be honoured"
        );
    }
}
