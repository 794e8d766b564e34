//! The writer's retry policy: after a failed file operation, wait 10 ms,
//! 100 ms and 1 s (`WriterConfig::retry_delays`), then reopen the file and
//! retry every `steady_retry` for as long as it takes, never past the
//! shutdown deadline. Accepted data is kept meanwhile: the bounded queue
//! holds the producers back.

use std::{
    io,
    sync::atomic::Ordering,
    thread,
    time::{Duration, Instant},
};

use super::{file::LogDir, rotate::Files, worker::Writer};

impl<D: LogDir> Writer<D> {
    /// After the `failures`-th consecutive failure: log, wait, and say
    /// whether to try again (false only when shutting down and the shutdown
    /// timeout has passed).
    pub(super) fn wait_before_retry(&mut self, failures: usize, e: &io::Error) -> bool {
        if self.shared.past_deadline() {
            return false;
        }
        if let Some(stop_at) = self.stop_at {
            if stop_at.elapsed() >= self.config.shutdown_timeout {
                return false;
            }
        }
        match self.config.retry_delays.get(failures - 1) {
            Some(&delay) => {
                tracing::warn!(
                    attempt = failures,
                    error = %e,
                    "Writing the log file failed; retrying in {delay:?}."
                );
                self.pause(delay);
            }
            None => {
                tracing::error!(
                    error = %e,
                    unwritten_bytes = self.batch.remaining(),
                    queued_records = self.queue.len(),
                    "Writing the log file keeps failing; keeping the data, reopening the file and retrying every {:?}.",
                    self.config.steady_retry
                );
                self.files.close();
                self.pause(self.config.steady_retry);
            }
        }
        if self.shared.stop.load(Ordering::SeqCst) && self.stop_at.is_none() {
            self.stop_at = Some(Instant::now());
        }
        true
    }

    /// Sleeps `delay` before a retry, but not past the shutdown deadline.
    fn pause(&self, delay: Duration) {
        let delay = match self.shared.deadline.get() {
            Some(d) => delay.min(d.saturating_duration_since(Instant::now())),
            None => delay,
        };
        thread::sleep(delay);
    }

    /// Runs a file operation until it succeeds, with the same retry policy
    /// as writes.
    pub(super) fn retry_until_done(
        &mut self,
        what: &str,
        mut op: impl FnMut(&mut Files<D>) -> io::Result<()>,
    ) {
        let mut failures = 0;
        while let Err(e) = op(&mut self.files) {
            failures += 1;
            self.shared.stats.errors.add(1);
            tracing::warn!(error = %e, "Could not {what}.");
            if !self.wait_before_retry(failures, &e) {
                return;
            }
            self.shared.stats.retries.add(1);
        }
    }
}
