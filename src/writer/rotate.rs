//! The files of the log directory and their rotation (docs/PROTOCOL.md):
//! `_main.log` is written; `_main.log.0` is the newest rotated file and
//! `_main.log.N` the oldest; at most `max_files` files counting the active
//! one.
//!
//! Last step of the writer before the disk. Rotation happens before a
//! write that would take the active file past the size limit (the batch
//! decides where lines end), so no file exceeds it and no line is split.
//!
//! A directory where a rotated file should go (`_main.log.3` made by hand,
//! say) cannot be renamed over nor removed as a file. Rotation reports it
//! once and skips that slot: the chain goes on around it, keeping one file
//! fewer, and writes are never held up by it.

use std::{
    collections::BTreeSet,
    io::{self, IoSlice},
    sync::{Arc, Mutex},
};

use super::{
    compress::SUFFIXES,
    file::{EntryKind, LogDir, LogFile},
};

// The names are part of the contract with the readers of the directory.
pub use log_server_wire::output::{rotated_name, ACTIVE};

/// The active file of a log directory, opened lazily and reopened after
/// errors, and the rotation of the older ones.
#[derive(Debug)]
pub struct Files<D: LogDir> {
    dir: D,
    file: Option<D::File>,
    /// Bytes in the active file (as opened plus what we wrote).
    len: u64,
    /// Bytes of the active file whose writeback was started.
    written_back: u64,
    /// Files rotation removed, still open: closing them frees their blocks,
    /// which the writer leaves to the finisher thread ([`Files::take_removed`]).
    removed: Vec<D::File>,
    max_files: usize,
    /// The file was found with a torn last line (crash): a newline goes in
    /// before anything else.
    torn: bool,
    /// The active file was opened before. Only the first open can find a
    /// line torn by a crash: a reopen after a write error finds our own
    /// partly written line, which the retry completes byte for byte.
    opened_before: bool,
    /// Rotated slots found occupied by a directory and already reported, so
    /// each is reported once (again only if it is cleared and comes back).
    blocked: BTreeSet<usize>,
    /// Held while the chain of rotated files is renamed, and by the
    /// compressor while it puts a compressed file in place (never while it
    /// compresses), so that neither moves a file under the other.
    chain: Arc<Mutex<()>>,
}

/// The names slot `i`'s file may have: plain, then each compressed form.
fn variants(i: usize) -> impl Iterator<Item = String> {
    let plain = rotated_name(i);
    std::iter::once(plain.clone()).chain(SUFFIXES.iter().map(move |s| format!("{plain}{s}")))
}

/// Bytes written between two writeback starts: large enough that the call
/// (~0.15 ms each in strace) costs the writer little, small enough that a
/// rotated file has at most this much left for its fsync. Measured with
/// `scripts/latency-at-defaults.sh`: 1 MiB gave p99 0.70-1.03 ms and p99.9
/// 2.1-3.0 ms at 1 M msg/s; 4 MiB p99 0.51-0.54 ms, p99.9 1.15-1.67 ms.
const WRITEBACK_CHUNK: u64 = 4 * 1024 * 1024;

fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

impl<D: LogDir> Files<D> {
    /// Opens (or creates) the active file, appending to what is there.
    pub fn open(dir: D, max_files: usize) -> io::Result<Self> {
        let mut files = Files {
            dir,
            file: None,
            len: 0,
            written_back: 0,
            removed: Vec::new(),
            max_files: max_files.max(1),
            torn: false,
            opened_before: false,
            blocked: BTreeSet::new(),
            chain: Arc::new(Mutex::new(())),
        };
        files.ensure_open()?;
        Ok(files)
    }

    /// Bytes in the active file.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn dir(&self) -> &D {
        &self.dir
    }

    /// Opens the active file if it is not open (first use, or after
    /// [`Files::close`]), and terminates a torn last line.
    pub fn ensure_open(&mut self) -> io::Result<()> {
        if self.file.is_none() {
            let opened = self.dir.open_append(ACTIVE)?;
            self.file = Some(opened.file);
            self.len = opened.len;
            self.written_back = opened.len;
            self.torn = opened.torn && !self.opened_before;
            self.opened_before = true;
        }
        if self.torn {
            let file = self.file.as_mut().expect("opened above");
            if file.write_vectored(&[IoSlice::new(b"\n")])? == 1 {
                self.len += 1;
                self.torn = false;
            }
        }
        Ok(())
    }

    /// Closes the active file; the next write reopens it by name. After an
    /// error this recovers from a file or directory removed or renamed
    /// under the server (the new file is created).
    pub fn close(&mut self) {
        self.file = None;
    }

    /// Closes the active file and hands it over (to be fsynced); the next
    /// write opens `_main.log` by name again.
    pub fn detach(&mut self) -> Option<D::File> {
        self.file.take()
    }

    /// One vectored write to the active file.
    pub fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.ensure_open()?;
        let n = self
            .file
            .as_mut()
            .expect("opened above")
            .write_vectored(bufs)?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the file took no bytes",
            ));
        }
        self.len += n as u64;
        // Writeback of each full chunk as soon as it is written: the dirty
        // pages of a whole file at once made the fsync at rotation, and the
        // journal commit behind it, a stall of milliseconds.
        if self.len - self.written_back >= WRITEBACK_CHUNK {
            let file = self.file.as_ref().expect("opened above");
            file.start_writeback(self.written_back, self.len - self.written_back);
            self.written_back = self.len;
        }
        Ok(n)
    }

    /// Whether `_main.log` is no longer the file being written (removed or
    /// renamed under us, as logrotate does): then the file is closed, and
    /// the next write creates a new `_main.log`.
    pub fn reopen_if_replaced(&mut self) -> io::Result<bool> {
        let Some(file) = &self.file else {
            return Ok(false);
        };
        let open_id = file.id()?;
        if self.dir.id(ACTIVE)? == Some(open_id) {
            return Ok(false);
        }
        self.close();
        Ok(true)
    }

    /// Makes what was written durable.
    pub fn sync(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.sync(),
            None => Ok(()),
        }
    }

    /// Shifts every rotated file one place older (dropping the oldest),
    /// makes the active file `_main.log.0`, and starts a new active file.
    /// Returns the old active file, still open, so that the caller can make
    /// it durable off the hot path. Slots a directory occupies are skipped
    /// (see the module documentation).
    ///
    /// If a step fails, the error is returned and the files are left as the
    /// steps before it made them; calling again carries on (missing files are
    /// skipped), and the active file keeps its data until its rename works.
    pub fn rotate(&mut self) -> io::Result<Option<D::File>> {
        let old = self.file.take();
        let slots = self.usable_slots()?;
        let chain = self.chain.clone();
        let _chain = chain.lock().unwrap_or_else(|e| e.into_inner());
        match slots.split_last() {
            // No rotated files are kept: the active file starts over.
            None => ignore_missing(self.dir.remove(ACTIVE))?,
            Some((&oldest, _)) => {
                // A slot's file is plain or compressed (`.gz`, `.zst`):
                // each moves along the chain under whichever name it has.
                for name in variants(oldest) {
                    match self.dir.remove_keeping_open(&name) {
                        Ok(Some(file)) => self.removed.push(file),
                        other => ignore_missing(other.map(drop))?,
                    }
                }
                for pair in slots.windows(2).rev() {
                    for (from, to) in variants(pair[0]).zip(variants(pair[1])) {
                        ignore_missing(self.dir.rename(&from, &to))?;
                    }
                }
                ignore_missing(self.dir.rename(ACTIVE, &rotated_name(slots[0])))?;
            }
        }
        self.len = 0;
        self.written_back = 0;
        self.torn = false;
        self.ensure_open()?;
        Ok(old)
    }

    /// The files the last rotations removed, for someone else to close.
    pub fn take_removed(&mut self) -> Vec<D::File> {
        std::mem::take(&mut self.removed)
    }

    /// The lock the compressor takes to put a file in place.
    pub fn chain(&self) -> Arc<Mutex<()>> {
        self.chain.clone()
    }

    /// The rotated slots, newest first, that can take a file: all of
    /// `0..max_files - 1` but those a directory occupies (reported once).
    fn usable_slots(&mut self) -> io::Result<Vec<usize>> {
        let mut slots = Vec::with_capacity(self.max_files - 1);
        for i in 0..self.max_files - 1 {
            let name = rotated_name(i);
            if self.dir.kind(&name)? == EntryKind::Directory {
                if self.blocked.insert(i) {
                    tracing::warn!(
                        "{name} in the log directory is a directory, not a file; rotation skips that slot and keeps one old file fewer until it is removed."
                    );
                }
            } else {
                self.blocked.remove(&i);
                slots.push(i);
            }
        }
        Ok(slots)
    }
}
