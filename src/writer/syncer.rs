//! The finisher thread: the writer hands it each rotated file, so that
//! neither the fsync of a full file (`--fsync rotate|batch`) nor its
//! compression (`--compress`, see `compress.rs`) ever holds up the writes
//! to the next one.

use std::{
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use super::{
    compress::{self, Compression, Placed},
    file::{LogDir, LogFile},
};

/// What the writer hands the finisher.
#[derive(Debug)]
pub(super) enum Job<F> {
    /// A file rotated out (or closed by SIGHUP): fsync it, compress it.
    Rotated(F),
    /// A file rotation removed, still open: its cache is released a slice
    /// at a time, then closing it frees its blocks.
    Close(F),
}

/// What the finisher does with each rotated file.
#[derive(Debug)]
pub(super) struct Finisher<D: LogDir> {
    /// fsync it (unless `--fsync none`).
    pub sync: bool,
    pub compress: Compression,
    /// Its own handle on the log directory, for compressing.
    pub dir: Option<D>,
    /// The rotation chain's lock (see `rotate.rs`).
    pub chain: Arc<Mutex<()>>,
    pub max_files: usize,
    /// Told of each removed file before it is closed (`--forward_otlp`).
    pub on_removed: Option<Arc<dyn super::RemovedFileHook>>,
}

impl<D: LogDir> Finisher<D> {
    /// Runs until the writer drops its end of the channel (at shutdown,
    /// after its last rotation): every file handed over is finished.
    pub(super) fn run(mut self, rx: std::sync::mpsc::Receiver<Job<D::File>>) {
        for job in rx {
            let mut file = match job {
                Job::Rotated(file) => file,
                Job::Close(file) => {
                    if let Some(hook) = &self.on_removed {
                        if let Some(dup) = file.duplicate() {
                            hook.removed(dup);
                        }
                    }
                    file.release_cache();
                    drop(file);
                    continue;
                }
            };
            if self.sync {
                sync(&mut file);
            }
            if let Some(dir) = self.dir.as_mut() {
                match compress::compress_rotated(
                    dir,
                    &self.chain,
                    &file,
                    self.compress,
                    self.max_files,
                ) {
                    Ok(Placed::At { slot, from, to }) => {
                        tracing::debug!(slot, "Compressed a rotated log file.");
                        if let (Some(hook), Some(to)) = (&self.on_removed, to) {
                            hook.compressed(from, to);
                        }
                    }
                    Ok(Placed::Gone) => tracing::warn!(
                        "A rotated log file was rotated out before it could be compressed."
                    ),
                    // The plain file stays where it is: nothing is lost.
                    Err(e) => {
                        tracing::error!(error = %e, "Could not compress a rotated log file; it stays uncompressed.")
                    }
                }
            }
        }
    }
}

/// Makes a rotated file durable, retrying a failed fsync a few times (the
/// data is in the page cache either way; a file that cannot be synced is
/// reported).
fn sync<F: LogFile>(file: &mut F) {
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
