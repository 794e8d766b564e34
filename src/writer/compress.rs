//! Compressed rotation (`--compress gzip|zstd`): after the writer rotates
//! a file out, the finisher thread (`syncer.rs`) compresses it into
//! `_main.log.N.gz` / `_main.log.N.zst` and removes the plain file.
//!
//! Off the writer thread, and crash-safe: the compressed bytes go to a
//! hidden temporary name, are fsynced, and only then renamed into place, so
//! a final name never holds a partial file. The rotated file is read through
//! the handle the writer wrote it with, and found again by identity when
//! the result is put in place (more rotations may have moved it along the
//! chain meanwhile); the rename chain and the placement share one lock, held
//! for renames only, never while compressing.

use std::{
    io::{self, IoSlice, Write},
    sync::Mutex,
};

use super::{
    file::{FileId, LogDir, LogFile},
    rotate::rotated_name,
};

/// `--compress`: what rotated files become.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Compression {
    /// Rotated files stay plain text.
    #[default]
    None,
    /// gzip (`.gz`), level 6: readable by every tool.
    Gzip,
    /// zstd (`.zst`), level 3: several times faster than gzip at a similar
    /// ratio on log lines.
    Zstd,
}

/// Every suffix a rotated file may carry, whatever `--compress` is now (a
/// previous run may have used another).
pub const SUFFIXES: [&str; 2] = [".gz", ".zst"];

/// Where a file is compressed before it is renamed into place. Hidden, so
/// that readers of `_main.log*` never see it; removed at startup if a crash
/// left it.
pub const TEMP: &str = ".compressing.tmp";

impl Compression {
    /// The suffix of compressed files, `None` when off.
    pub fn suffix(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some(".gz"),
            Compression::Zstd => Some(".zst"),
        }
    }
}

/// What became of one rotated file.
#[derive(Debug, PartialEq, Eq)]
pub enum Placed {
    /// Compressed into this slot of the chain; `from` was the plain file,
    /// `to` is the compressed one.
    At {
        slot: usize,
        from: FileId,
        to: Option<FileId>,
    },
    /// Rotated out of the chain (removed) before it was compressed.
    Gone,
}

/// Compresses the rotated file `file` and puts the result in its place in
/// the chain of `max_files` files.
pub fn compress_rotated<D: LogDir>(
    dir: &mut D,
    chain: &Mutex<()>,
    file: &D::File,
    how: Compression,
    max_files: usize,
) -> io::Result<Placed> {
    let Some(suffix) = how.suffix() else {
        return Ok(Placed::Gone);
    };
    ignore_missing(dir.remove(TEMP))?;
    let mut out = dir.open_append(TEMP)?.file;
    match how {
        Compression::Gzip => {
            let mut z =
                flate2::write::GzEncoder::new(Appender(&mut out), flate2::Compression::default());
            copy(file, &mut z)?;
            z.finish()?;
        }
        Compression::Zstd => {
            let mut z = zstd::Encoder::new(Appender(&mut out), 3)?;
            copy(file, &mut z)?;
            z.finish()?;
        }
        Compression::None => unreachable!("returned above"),
    }
    out.sync()?;
    drop(out);
    let id = file.id()?;
    let _chain = chain.lock().unwrap_or_else(|e| e.into_inner());
    for i in 0..max_files.saturating_sub(1) {
        let name = rotated_name(i);
        if dir.id(&name)? == Some(id) {
            let compressed = format!("{name}{suffix}");
            dir.rename(TEMP, &compressed)?;
            ignore_missing(dir.remove(&name))?;
            return Ok(Placed::At {
                slot: i,
                from: id,
                to: dir.id(&compressed)?,
            });
        }
    }
    ignore_missing(dir.remove(TEMP))?;
    Ok(Placed::Gone)
}

/// At startup, what a crash in the middle of compressing left: the
/// temporary file, and a plain file beside its compressed copy (the copy is
/// whole: it was fsynced before it was renamed into place).
pub fn clean_up<D: LogDir>(dir: &mut D, max_files: usize) -> io::Result<()> {
    ignore_missing(dir.remove(TEMP))?;
    for i in 0..max_files.saturating_sub(1) {
        let name = rotated_name(i);
        let compressed = SUFFIXES
            .iter()
            .map(|s| dir.id(&format!("{name}{s}")))
            .collect::<io::Result<Vec<_>>>()?;
        if compressed.iter().any(Option::is_some) {
            ignore_missing(dir.remove(&name))?;
        }
    }
    Ok(())
}

fn copy(file: &impl LogFile, to: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut at = 0u64;
    loop {
        match file.read_at(&mut buf, at) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                to.write_all(&buf[..n])?;
                at += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// `io::Write` over a log file's vectored append.
struct Appender<'a, F>(&'a mut F);

impl<F: LogFile> Write for Appender<'_, F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_vectored(&[IoSlice::new(buf)])
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
