//! The writer's view of the file system: a directory of log files that can
//! be opened for appending, renamed and removed ([`LogDir`]), and an open
//! file that takes vectored writes ([`LogFile`]).
//!
//! The writer only ever goes through these traits, so tests inject short
//! writes and errors (`writer::tests`), while [`RealDir`] is plain `std::fs`
//! with `O_APPEND` and `writev`. File names come from the writer
//! (`_main.log`, `_main.log.N`), never from a client.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, IoSlice, Write},
    os::unix::fs::{FileExt, MetadataExt},
    path::{Path, PathBuf},
};

/// Which file an open file or a name is: device and inode.
pub type FileId = (u64, u64);

/// An open log file.
pub trait LogFile: Send + 'static {
    /// One vectored write (`writev`); may write fewer bytes than given.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Makes written data durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
    /// Which file this is.
    fn id(&self) -> io::Result<FileId>;
}

/// A file as opened for appending.
#[derive(Debug)]
pub struct Opened<F> {
    pub file: F,
    /// Its length when opened: writes go after it.
    pub len: u64,
    /// It is not empty and its last byte is not a newline: a crash tore its
    /// last line, which must be terminated before anything is appended.
    pub torn: bool,
}

/// The log directory.
pub trait LogDir: Send + 'static {
    type File: LogFile;
    /// Opens `name` for appending, creating it (and the directory) if
    /// missing.
    fn open_append(&mut self, name: &str) -> io::Result<Opened<Self::File>>;
    /// Renames `from` to `to`, replacing `to`. `NotFound` if `from` is absent.
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()>;
    /// Removes `name`. `NotFound` if absent.
    fn remove(&mut self, name: &str) -> io::Result<()>;
    /// Which file `name` is now, or `None` if there is none.
    fn id(&mut self, name: &str) -> io::Result<Option<FileId>>;
}

/// A real directory on disk.
#[derive(Debug, Clone)]
pub struct RealDir {
    path: PathBuf,
}

impl RealDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RealDir { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl LogFile for File {
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Write::write_vectored(self, bufs)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.sync_data()
    }

    fn id(&self) -> io::Result<FileId> {
        let m = self.metadata()?;
        Ok((m.dev(), m.ino()))
    }
}

impl LogDir for RealDir {
    type File = File;

    fn open_append(&mut self, name: &str) -> io::Result<Opened<File>> {
        // Recreates the directory too if it was removed under us.
        fs::create_dir_all(&self.path)?;
        // Read access only to look at the last byte (a torn line).
        let file = OpenOptions::new()
            .read(true)
            .create(true)
            .append(true)
            .open(self.path.join(name))?;
        let len = file.metadata()?.len();
        let torn = if len == 0 {
            false
        } else {
            let mut last = [0u8; 1];
            file.read_exact_at(&mut last, len - 1)?;
            last[0] != b'\n'
        };
        Ok(Opened { file, len, torn })
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.path.join(from), self.path.join(to))
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        fs::remove_file(self.path.join(name))
    }

    fn id(&mut self, name: &str) -> io::Result<Option<FileId>> {
        match fs::metadata(self.path.join(name)) {
            Ok(m) => Ok(Some((m.dev(), m.ino()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}
