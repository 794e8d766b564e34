//! The syncer thread (unless `--fsync none`): the writer hands it each
//! rotated file, so the fsync of a full file never holds up the writes to
//! the next one.

use std::{thread, time::Duration};

use super::file;

/// The syncer thread: makes each rotated file durable, retrying a failed
/// fsync a few times (the data is in the page cache either way; a file that
/// cannot be synced is reported).
pub(super) fn sync_rotated<F: file::LogFile>(rx: std::sync::mpsc::Receiver<F>) {
    for mut file in rx {
        let mut attempt = 0;
        while let Err(e) = file.sync() {
            attempt += 1;
            if attempt == 3 {
                tracing::error!(error = %e, "Could not fsync a rotated log file; its data may not survive a power loss.");
                break;
            }
            thread::sleep(Duration::from_millis(100 * attempt));
        }
    }
}
