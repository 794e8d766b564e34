//! The forwarder's checkpoint: which file (by its [`Head`]) and where in
//! it the first line not yet acknowledged by the destination is, and how
//! far lines were sent. Kept in the log directory as `_forward.checkpoint`.
//!
//! Written after every acknowledged batch by writing a temporary file and
//! renaming it over the old one, so a crash leaves the old checkpoint or
//! the new one, never a torn one. It is not fsynced each time: a process
//! crash keeps the page cache, and after a power loss an older checkpoint
//! only means lines are sent again (at least once), never skipped. The
//! parsing is pure; [`store`] and [`load`] do the I/O.

use std::{
    fs::OpenOptions,
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use thiserror::Error;

use super::follow::Head;

/// Name of the checkpoint in the log directory.
pub const NAME: &str = "_forward.checkpoint";
/// What it is written as before the rename.
const TEMP: &str = "_forward.checkpoint.tmp";

/// Where forwarding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The file.
    pub head: Head,
    /// Offset (uncompressed) of its first line not acknowledged.
    pub acked: u64,
    /// Offset up to which its lines were sent: beyond `acked` while a batch
    /// is in flight, equal after a clean stop. Lines between the two may
    /// reach the destination twice after a crash, and are counted so.
    pub sent: u64,
}

/// Why a checkpoint could not be read.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum CheckpointError {
    #[error("line {line} of the checkpoint is not `key=value`")]
    Syntax { line: usize },
    #[error("the checkpoint's {key} is not valid")]
    Value { key: &'static str },
    #[error("the checkpoint has no {key}")]
    Missing { key: &'static str },
    #[error("the checkpoint is version {0}; this log-server reads version 1")]
    Version(String),
}

impl Checkpoint {
    pub fn render(&self) -> String {
        format!(
            "# log-server forwarding checkpoint; rewritten after every acknowledged batch\n\
             version=1\nhead={:016x}:{}\nacked={}\nsent={}\n",
            self.head.hash, self.head.len, self.acked, self.sent
        )
    }

    pub fn parse(text: &str) -> Result<Checkpoint, CheckpointError> {
        let (mut head, mut acked, mut sent, mut version) = (None, None, None, None);
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .ok_or(CheckpointError::Syntax { line: i + 1 })?;
            let number = |key| {
                value
                    .parse::<u64>()
                    .map_err(|_| CheckpointError::Value { key })
            };
            match key {
                "version" => version = Some(value.to_string()),
                "head" => {
                    let bad = CheckpointError::Value { key: "head" };
                    let (hash, len) = value.split_once(':').ok_or_else(|| bad.clone())?;
                    head = Some(Head {
                        hash: u64::from_str_radix(hash, 16).map_err(|_| bad.clone())?,
                        len: len.parse().map_err(|_| bad)?,
                    });
                }
                "acked" => acked = Some(number("acked")?),
                "sent" => sent = Some(number("sent")?),
                // Keys a later version may add are not an error.
                _ => {}
            }
        }
        match version.as_deref() {
            Some("1") => {}
            Some(v) => return Err(CheckpointError::Version(v.to_string())),
            None => return Err(CheckpointError::Missing { key: "version" }),
        }
        let head = head.ok_or(CheckpointError::Missing { key: "head" })?;
        let acked = acked.ok_or(CheckpointError::Missing { key: "acked" })?;
        let sent = sent.unwrap_or(acked).max(acked);
        Ok(Checkpoint { head, acked, sent })
    }
}

/// Writes `checkpoint` atomically into `dir`; with `durable`, fsyncs it and
/// the directory (at a clean stop).
pub fn store(dir: &Path, checkpoint: &Checkpoint, mode: u32, durable: bool) -> io::Result<()> {
    let temp = dir.join(TEMP);
    let open = || {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            // Never write through a link planted at the temporary name.
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)
    };
    let mut file = match open() {
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            std::fs::remove_file(&temp)?;
            open()?
        }
        other => other?,
    };
    file.write_all(checkpoint.render().as_bytes())?;
    if durable {
        file.sync_data()?;
    }
    drop(file);
    std::fs::rename(&temp, dir.join(NAME))?;
    if durable {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The checkpoint in `dir`: `Ok(None)` if there is none (first start).
pub fn load(dir: &Path) -> io::Result<Option<Result<Checkpoint, CheckpointError>>> {
    let path = dir.join(NAME);
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    // A checkpoint is a few lines; anything much larger is not ours.
    io::Read::read_to_string(&mut io::Read::take(file, 64 * 1024), &mut text)
        .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", path.display())))?;
    Ok(Some(Checkpoint::parse(&text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            head: Head {
                hash: 0x0123_4567_89ab_cdef,
                len: 212,
            },
            acked: 1_048_576,
            sent: 1_150_000,
        }
    }

    #[test]
    fn a_checkpoint_reads_back_as_written_through_the_directory() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(load(d.path()).unwrap(), None);
        store(d.path(), &sample(), 0o640, false).unwrap();
        assert_eq!(load(d.path()).unwrap(), Some(Ok(sample())));
        let next = Checkpoint {
            acked: 1_150_000,
            ..sample()
        };
        store(d.path(), &next, 0o640, true).unwrap();
        assert_eq!(load(d.path()).unwrap(), Some(Ok(next)));
        assert!(!d.path().join(TEMP).exists());
    }

    #[test]
    fn a_link_planted_at_the_temporary_name_is_not_written_through() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, d.path().join(TEMP)).unwrap();
        store(d.path(), &sample(), 0o640, false).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(load(d.path()).unwrap(), Some(Ok(sample())));
    }

    #[test]
    fn damaged_checkpoints_are_errors_not_guesses() {
        for (text, want) in [
            ("", CheckpointError::Missing { key: "version" }),
            ("version=2\n", CheckpointError::Version("2".into())),
            (
                "version=1\nacked=1\n",
                CheckpointError::Missing { key: "head" },
            ),
            (
                "version=1\nhead=zz:1\nacked=1\n",
                CheckpointError::Value { key: "head" },
            ),
            (
                "version=1\nhead=ab:1\nacked=x\n",
                CheckpointError::Value { key: "acked" },
            ),
            ("version=1\ngarbage\n", CheckpointError::Syntax { line: 2 }),
        ] {
            assert_eq!(Checkpoint::parse(text), Err(want), "{text:?}");
        }
        // `sent` below `acked` (hand-edited) cannot mean lines in flight.
        let c = Checkpoint::parse("version=1\nhead=ab:1\nacked=9\nsent=3\nnew_key=1\n").unwrap();
        assert_eq!((c.acked, c.sent), (9, 9));
    }
}
