//! The writer's view of the file system: a directory of log files that can
//! be opened for appending, renamed and removed ([`LogDir`]), and an open
//! file that takes vectored writes ([`LogFile`]).
//!
//! The writer only ever goes through these traits, so tests inject short
//! writes and errors (`writer::tests`), while [`RealDir`] is the real thing.
//! File names come from the writer (`_main.log`, `_main.log.N`), never from
//! a client.
//!
//! # Safety of the log directory
//!
//! Anyone who can write the log directory could plant a symbolic link or a
//! hard link named `_main.log` and make the server append client text to a
//! file elsewhere. [`RealDir`] therefore:
//!
//! - holds the directory open and works only relative to that descriptor
//!   (`openat`, `renameat`, `unlinkat`, `fstatat`), never following a link
//!   in a name inside it (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`);
//! - writes only to a regular file with a single name (or a FIFO an
//!   operator put there on purpose); at startup anything else at
//!   `_main.log` is refused with one sentence, while running a link there is
//!   removed (removing a name loses no data) and a new file started;
//! - refuses a directory that others can write (group or other write bit,
//!   or owned by another user than the server's or root) unless
//!   [`DirOptions::allow_shared`];
//! - takes an exclusive `flock` on the directory, so a second server on the
//!   same directory fails at startup;
//! - creates directories and files with exactly [`DirOptions::dir_mode`] and
//!   [`DirOptions::file_mode`] (`fchmod` after creation, so the umask
//!   neither narrows nor widens them); existing ones keep their mode.
//!
//! The configured directory path is resolved once at startup: a symbolic
//! link the operator configured as the directory itself is followed then.
//! If the directory is later removed or replaced, the server recreates the
//! resolved path, never following a link in its last component, and
//! applies the same checks again.

use std::{
    ffi::CString,
    fs::{self, File},
    io::{self, IoSlice, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::{
            ffi::OsStrExt,
            fs::{DirBuilderExt, FileExt, MetadataExt},
        },
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use thiserror::Error;

/// Which file an open file or a name is: device and inode.
pub type FileId = (u64, u64);

/// Default `--file_mode`: the owner reads and writes, its group reads.
pub const DEFAULT_FILE_MODE: u32 = 0o640;
/// Default `--dir_mode`: the owner has everything, its group may list and
/// read.
pub const DEFAULT_DIR_MODE: u32 = 0o750;

/// An open log file.
pub trait LogFile: Send + 'static {
    /// One vectored write (`writev`); may write fewer bytes than given.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Makes written data durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
    /// Which file this is.
    fn id(&self) -> io::Result<FileId>;
    /// Reads at `offset` without moving any position (`pread`): the
    /// compressor reads a rotated file through the handle the writer used.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Starts writeback of `len` bytes at `offset` without waiting for it
    /// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`): data goes to disk while
    /// the file is written, so the fsync when it is rotated out finds
    /// little left to do, and does not hold the file system's journal.
    /// Advisory: a failure changes nothing for durability.
    fn start_writeback(&self, _offset: u64, _len: u64) {}
    /// Drops the file's pages from the page cache, a slice at a time,
    /// letting other threads run between slices (`posix_fadvise(DONTNEED)`,
    /// then `sched_yield`). Called on a file rotation removed, just before
    /// its last close: evicting 10 MiB of cached pages took that close
    /// 2.5-3.5 ms of CPU in one piece (`truncate_inode_pages_range`, 75% of
    /// the finisher's time in `perf record`), and the writer, woken meanwhile
    /// on the same CPU, waited for it. Advisory: other readers of the file
    /// read it from disk instead; nothing else changes.
    fn release_cache(&self) {}
    /// Another descriptor of the same file, for the forwarder to read a
    /// file rotation removed (`None` where there is no real file).
    fn duplicate(&self) -> Option<File> {
        None
    }
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

/// What a name in the log directory is, without following a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// Nothing has that name.
    Missing,
    /// A regular file.
    File,
    /// A directory: no file can be renamed over it.
    Directory,
    /// A symbolic link, a FIFO, a socket or a device.
    Other,
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
    /// Removes `name` but hands back the file, still open, if it is a
    /// regular one: its blocks are freed when the last descriptor closes,
    /// so whoever closes it pays for that, not the caller. Unlinking a full
    /// 10 MiB file took ~3 ms on ext4, inline in every rotation.
    fn remove_keeping_open(&mut self, name: &str) -> io::Result<Option<Self::File>> {
        self.remove(name).map(|()| None)
    }
    /// Which file `name` is now, or `None` if there is none.
    fn id(&mut self, name: &str) -> io::Result<Option<FileId>>;
    /// What `name` is, not following a link.
    fn kind(&mut self, name: &str) -> io::Result<EntryKind>;
    /// Another handle on the same directory, for a helper thread (the
    /// compressor of rotated files).
    fn try_clone(&self) -> io::Result<Self>
    where
        Self: Sized;
}

/// Modes and trust of the log directory (`--file_mode`, `--dir_mode`,
/// `--allow_shared_log_dir`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirOptions {
    /// Mode of the log files the server creates.
    pub file_mode: u32,
    /// Mode of the directories the server creates.
    pub dir_mode: u32,
    /// Accept a log directory that others can write.
    pub allow_shared: bool,
}

impl Default for DirOptions {
    fn default() -> Self {
        DirOptions {
            file_mode: DEFAULT_FILE_MODE,
            dir_mode: DEFAULT_DIR_MODE,
            allow_shared: false,
        }
    }
}

/// Why the log directory or a name in it cannot be used. Each message is
/// one sentence for the operator.
#[derive(Debug, Error)]
pub enum DirError {
    /// The directory could not be created or opened.
    #[error("cannot open the log directory {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Others can write the directory.
    #[error(
        "the log directory {} is writable by {who} (mode {mode:04o}), who could plant links or files in it; \
         make it writable by its owner only (chmod go-w) or pass --allow_shared_log_dir",
        path.display()
    )]
    Shared {
        path: PathBuf,
        mode: u32,
        who: &'static str,
    },
    /// The directory belongs to another user, who can write it.
    #[error(
        "the log directory {} belongs to user {uid}, who could plant links or files in it; \
         give it to the server's user (or root) or pass --allow_shared_log_dir",
        path.display()
    )]
    ForeignOwner { path: PathBuf, uid: u32 },
    /// Another process holds the directory's lock.
    #[error(
        "another log-server already writes to the log directory {} (it holds the lock on it); \
         stop that one or choose another --log_dir",
        path.display()
    )]
    Locked { path: PathBuf },
    /// A name where a log file should be is something the server does not
    /// write to.
    #[error(
        "{} is {what}; log-server writes only to a regular file with one name (or a FIFO) there \
         and never through a link, so remove it or point --log_dir at another directory",
        path.display()
    )]
    NotAFile { path: PathBuf, what: String },
}

impl DirError {
    /// The `DirError` an `io::Error` from [`RealDir`] carries, if any.
    pub fn from_io(e: &io::Error) -> Option<&DirError> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<DirError>())
    }
}

/// A real directory on disk, held open (and locked) for the server's life.
#[derive(Debug)]
pub struct RealDir {
    /// The directory as resolved at startup.
    path: PathBuf,
    /// The held directory; every name is opened relative to it.
    fd: OwnedFd,
    /// Which directory `fd` is, to notice it was removed or replaced.
    id: FileId,
    opts: DirOptions,
    /// The active file was opened once. Before that (startup) anything
    /// unexpected at its name is refused, so the operator sees it; after,
    /// a planted link is removed so that logging goes on.
    started: bool,
    /// Rate limit of the warning about a removed planted name.
    replaced_warning: Throttle,
}

/// At most one warning per [`THROTTLE`], with the count of those left out.
#[derive(Debug, Default)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

const THROTTLE: Duration = Duration::from_secs(10);

impl Throttle {
    /// Whether to warn now, and how many warnings were left out before.
    fn allow(&mut self) -> Option<u64> {
        if self.last.is_some_and(|t| t.elapsed() < THROTTLE) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.suppressed))
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Runs a syscall again while it is interrupted by a signal.
fn retry_eintr(mut f: impl FnMut() -> libc::c_int) -> io::Result<libc::c_int> {
    loop {
        match cvt(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn c_name(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in a name"))
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in a path"))
}

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is valid; fstat only writes into it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable `stat`.
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

/// `fstatat` without following a link; `None` if the name is absent.
fn lstat_at(dir: RawFd, name: &CString) -> io::Result<Option<libc::stat>> {
    // SAFETY: as in `fstat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is NUL-terminated, `st` writable.
    match cvt(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) }) {
        Ok(_) => Ok(Some(st)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn id_of(st: &libc::stat) -> FileId {
    (st.st_dev, st.st_ino)
}

fn kind_of(st: &libc::stat) -> EntryKind {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => EntryKind::File,
        libc::S_IFDIR => EntryKind::Directory,
        _ => EntryKind::Other,
    }
}

/// Opens a directory, not following a link in its last component.
/// `O_CLOEXEC`: a child process must not inherit the directory's lock.
fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = c_path(path)?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    // SAFETY: `c` is NUL-terminated.
    let fd = retry_eintr(|| unsafe { libc::open(c.as_ptr(), flags) })?;
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Creates `path` and any missing parents, each with exactly `mode`.
fn create_dirs(path: &Path, mode: u32) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dirs(parent, mode)?;
    }
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {
            // The umask narrowed the mode given to mkdir; set it exactly,
            // through a descriptor so that a link swapped in is not chmodded.
            let fd = open_dir(path)?;
            // SAFETY: a valid descriptor.
            cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode) })?;
            Ok(())
        }
        // Someone else made it in the meantime: fine, it is checked later.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates (if missing), opens, checks and locks the log directory.
fn acquire(path: &Path, opts: &DirOptions) -> Result<(OwnedFd, FileId), DirError> {
    let open_err = |source| DirError::Open {
        path: path.to_path_buf(),
        source,
    };
    create_dirs(path, opts.dir_mode).map_err(open_err)?;
    let fd = open_dir(path).map_err(open_err)?;
    let st = fstat(fd.as_raw_fd()).map_err(open_err)?;
    if !opts.allow_shared {
        let mode = st.st_mode & 0o7777;
        // The sticky bit is no excuse: others could still create names
        // the server will meet (a link at a free rotated name, say).
        let who = if mode & 0o002 != 0 {
            Some("everyone")
        } else if mode & 0o020 != 0 {
            Some("its group")
        } else {
            None
        };
        if let Some(who) = who {
            return Err(DirError::Shared {
                path: path.to_path_buf(),
                mode,
                who,
            });
        }
        // SAFETY: geteuid cannot fail.
        let me = unsafe { libc::geteuid() };
        if st.st_uid != me && st.st_uid != 0 {
            return Err(DirError::ForeignOwner {
                path: path.to_path_buf(),
                uid: st.st_uid,
            });
        }
    }
    // SAFETY: a valid descriptor.
    if let Err(e) = cvt(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }) {
        return Err(if e.kind() == io::ErrorKind::WouldBlock {
            DirError::Locked {
                path: path.to_path_buf(),
            }
        } else {
            open_err(e)
        });
    }
    Ok((fd, id_of(&st)))
}

impl RealDir {
    /// Creates the directory if missing (with `opts.dir_mode`), opens it,
    /// refuses it if others can write it (unless `opts.allow_shared`) and
    /// locks it against a second server.
    pub fn open(path: impl AsRef<Path>, opts: DirOptions) -> Result<Self, DirError> {
        let configured = path.as_ref();
        // Create first so that the path can be resolved; then work on the
        // resolved path only, so a link swapped in for it later is not
        // followed.
        create_dirs(configured, opts.dir_mode).map_err(|source| DirError::Open {
            path: configured.to_path_buf(),
            source,
        })?;
        let path = fs::canonicalize(configured).map_err(|source| DirError::Open {
            path: configured.to_path_buf(),
            source,
        })?;
        let (fd, id) = acquire(&path, &opts)?;
        Ok(RealDir {
            path,
            fd,
            id,
            opts,
            started: false,
            replaced_warning: Throttle::default(),
        })
    }

    /// The directory, as resolved at startup.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the held directory is still the one at the path.
    fn is_current(&self) -> io::Result<bool> {
        if fstat(self.fd.as_raw_fd())?.st_nlink == 0 {
            return Ok(false);
        }
        match fs::symlink_metadata(&self.path) {
            Ok(m) => Ok(m.is_dir() && (m.dev(), m.ino()) == self.id),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// After the directory was removed or replaced under the server: create
    /// it again by path (or take the one now there) with the startup checks.
    fn ensure_current(&mut self) -> io::Result<()> {
        if self.is_current()? {
            return Ok(());
        }
        let (fd, id) = acquire(&self.path, &self.opts).map_err(io::Error::other)?;
        self.fd = fd;
        self.id = id;
        tracing::warn!(
            dir = %self.path.display(),
            "The log directory was removed or replaced under the server; writing into the directory now at its path."
        );
        Ok(())
    }

    fn openat(&self, name: &CString, extra: libc::c_int) -> io::Result<File> {
        let flags = libc::O_RDWR // read access only to look at the last byte (a torn line)
            | libc::O_APPEND
            | libc::O_NOFOLLOW
            | libc::O_CLOEXEC
            | libc::O_NOCTTY
            | extra;
        let mode = self.opts.file_mode as libc::c_uint;
        // SAFETY: `name` is NUL-terminated; the mode is read only with O_CREAT.
        let fd = retry_eintr(|| unsafe {
            libc::openat(self.fd.as_raw_fd(), name.as_ptr(), flags, mode)
        })?;
        // SAFETY: `fd` was just opened and is owned by nobody else.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Says what a name is that the server will not write to, for the
    /// operator. A link's target was chosen by whoever planted it, so it is
    /// quoted with escapes.
    fn describe(&self, name: &CString, st: &libc::stat) -> String {
        match st.st_mode & libc::S_IFMT {
            libc::S_IFLNK => {
                let mut buf = [0u8; 512];
                // SAFETY: `buf` is writable for its length.
                let n = unsafe {
                    libc::readlinkat(
                        self.fd.as_raw_fd(),
                        name.as_ptr(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                    )
                };
                match usize::try_from(n) {
                    Ok(n) => format!(
                        "a symbolic link to {:?}",
                        String::from_utf8_lossy(&buf[..n])
                    ),
                    Err(_) => "a symbolic link".into(),
                }
            }
            libc::S_IFREG => format!(
                "a file with {} names (hard links), one of which may be outside the log directory",
                st.st_nlink
            ),
            libc::S_IFDIR => "a directory".into(),
            libc::S_IFSOCK => "a socket".into(),
            libc::S_IFCHR | libc::S_IFBLK => "a device".into(),
            _ => "not a regular file".into(),
        }
    }

    /// Opens `name` for appending without ever following a link and
    /// without writing through a second name of a file. See the module
    /// documentation for what happens to anything else at `name`.
    fn open_file(&mut self, name: &str) -> io::Result<File> {
        let c = c_name(name)?;
        // Each round ends in success or because the name changed between
        // two calls (a race with whoever plants things here); a few rounds
        // settle it, and the writer retries after that.
        for _ in 0..4 {
            let Some(st) = lstat_at(self.fd.as_raw_fd(), &c)? else {
                match self.openat(&c, libc::O_CREAT | libc::O_EXCL) {
                    Ok(file) => {
                        // The umask narrowed the mode given to open; set it
                        // exactly.
                        // SAFETY: a valid descriptor.
                        cvt(unsafe { libc::fchmod(file.as_raw_fd(), self.opts.file_mode) })?;
                        return Ok(file);
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            };
            let acceptable = |st: &libc::stat| match st.st_mode & libc::S_IFMT {
                libc::S_IFREG => st.st_nlink == 1,
                // A FIFO can only be put there on purpose (a pipe to a
                // reader); writing to it sends nothing outside the host.
                libc::S_IFIFO => true,
                _ => false,
            };
            if !acceptable(&st) {
                let what = self.describe(&c, &st);
                let path = self.path.join(name);
                let removable = matches!(st.st_mode & libc::S_IFMT, libc::S_IFLNK | libc::S_IFREG);
                if !self.started || !removable {
                    return Err(io::Error::other(DirError::NotAFile { path, what }));
                }
                // Running: removing the planted name loses no data (the
                // link's target and a hard link's other names stay), and
                // logging goes on in a new file.
                // SAFETY: `c` is NUL-terminated.
                match cvt(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) }) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                if let Some(suppressed) = self.replaced_warning.allow() {
                    tracing::warn!(
                        suppressed,
                        "{} was {what}; removed that name and started a new log file there.",
                        path.display()
                    );
                }
                continue;
            }
            let file = match self.openat(&c, 0) {
                Ok(f) => f,
                // Removed, or a link swapped in, since the look: look again.
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(libc::ELOOP) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            };
            let opened = fstat(file.as_raw_fd())?;
            if id_of(&opened) == id_of(&st) && acceptable(&opened) {
                return Ok(file);
            }
        }
        Err(io::Error::other(format!(
            "{} kept changing while it was being opened",
            self.path.join(name).display()
        )))
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

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }

    fn duplicate(&self) -> Option<File> {
        self.try_clone().ok()
    }

    fn start_writeback(&self, offset: u64, len: u64) {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: sync_file_range only reads its arguments; the descriptor
        // is this open file's.
        unsafe {
            libc::sync_file_range(self.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
        }
    }

    fn release_cache(&self) {
        use std::os::fd::AsRawFd;
        let Ok(len) = self.metadata().map(|m| m.len()) else {
            return;
        };
        let mut offset = 0;
        while offset < len {
            let step = RELEASE_STEP.min(len - offset);
            let (Ok(at), Ok(n)) = (i64::try_from(offset), i64::try_from(step)) else {
                return;
            };
            // SAFETY: posix_fadvise only reads its arguments; the
            // descriptor is this open file's.
            unsafe {
                libc::posix_fadvise(self.as_raw_fd(), at, n, libc::POSIX_FADV_DONTNEED);
            }
            offset += step;
            std::thread::yield_now();
        }
        // A large folio that straddles a step's edge is in neither step:
        // one last look over the whole file drops what is left.
        // SAFETY: as above.
        unsafe {
            libc::posix_fadvise(self.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
}

/// How much of a removed file's cache `release_cache` drops at a time:
/// 256 pages, 0.1-0.2 ms of the kernel's work (`perf trace`), the longest
/// the writer can then wait behind it.
const RELEASE_STEP: u64 = 1 << 20;

impl LogDir for RealDir {
    type File = File;

    fn try_clone(&self) -> io::Result<Self> {
        Ok(RealDir {
            path: self.path.clone(),
            fd: self.fd.try_clone()?,
            id: self.id,
            opts: self.opts,
            // A helper never opens the active file.
            started: true,
            replaced_warning: Throttle::default(),
        })
    }

    fn open_append(&mut self, name: &str) -> io::Result<Opened<File>> {
        // Recreates the directory too if it was removed under us.
        self.ensure_current()?;
        let file = self.open_file(name)?;
        self.started = true;
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
        let (from, to) = (c_name(from)?, c_name(to)?);
        let dir = self.fd.as_raw_fd();
        // SAFETY: both names are NUL-terminated. renameat replaces a link at
        // `to` itself, never its target.
        cvt(unsafe { libc::renameat(dir, from.as_ptr(), dir, to.as_ptr()) }).map(drop)
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        let c = c_name(name)?;
        // SAFETY: `c` is NUL-terminated.
        cvt(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) }).map(drop)
    }

    fn remove_keeping_open(&mut self, name: &str) -> io::Result<Option<File>> {
        let c = c_name(name)?;
        // Read-only, never through a link, never blocking (a FIFO).
        let flags =
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK;
        // SAFETY: `c` is NUL-terminated; no mode without O_CREAT.
        let opened =
            retry_eintr(|| unsafe { libc::openat(self.fd.as_raw_fd(), c.as_ptr(), flags) })
                // SAFETY: `fd` was just opened and is owned by nobody else.
                .map(|fd| unsafe { File::from_raw_fd(fd) });
        self.remove(name)?;
        Ok(opened
            .ok()
            .filter(|f| f.metadata().is_ok_and(|m| m.file_type().is_file())))
    }

    /// `None` also when the held directory is no longer the one at its
    /// path (removed or replaced): the writer then reopens, which takes the
    /// directory now there.
    fn id(&mut self, name: &str) -> io::Result<Option<FileId>> {
        if !self.is_current()? {
            return Ok(None);
        }
        Ok(lstat_at(self.fd.as_raw_fd(), &c_name(name)?)?.map(|st| id_of(&st)))
    }

    fn kind(&mut self, name: &str) -> io::Result<EntryKind> {
        Ok(lstat_at(self.fd.as_raw_fd(), &c_name(name)?)?
            .map_or(EntryKind::Missing, |st| kind_of(&st)))
    }
}
