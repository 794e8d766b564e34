//! Following the files the writer wrote: which files the rotation chain
//! holds, in the order they were written, and the lines of one of them from
//! a given offset on, plain or compressed.
//!
//! First step of the forwarder (`files -> lines -> request -> export`): it
//! reads what the writer already made durable, so forwarding never touches
//! the writer or the queue. A file is known by its [`Head`], a hash of its
//! first line: the same for `_main.log`, for `_main.log.3` after rotation
//! renamed it, and for `_main.log.3.gz` after the finisher compressed it
//! (a new inode), which is what a checkpoint must survive.
//!
//! Names are opened with `O_NOFOLLOW` and only regular files are read, so a
//! link planted in the log directory is never followed (as by the writer).

use std::{
    fs::{File, OpenOptions},
    io::{self, Read},
    os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt},
    path::Path,
};

use crate::writer::{
    file::FileId,
    rotate::{rotated_name, ACTIVE},
};

/// Bytes of a file's start that make its [`Head`] at most.
pub const HEAD_BYTES: usize = 4096;

/// Bytes read from a file at a time.
const READ_CHUNK: usize = 256 * 1024;

/// Which file this is, by its first line (or its first [`HEAD_BYTES`]):
/// written once, never changed, kept by renames and by compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Head {
    pub hash: u64,
    pub len: u32,
}

impl Head {
    /// The head of a file that starts with `prefix`, or `None` while its
    /// first line is not complete (a new active file).
    pub fn of(prefix: &[u8]) -> Option<Head> {
        let window = &prefix[..prefix.len().min(HEAD_BYTES)];
        let len = match memchr::memchr(b'\n', window) {
            Some(i) => i + 1,
            None if window.len() == HEAD_BYTES => HEAD_BYTES,
            None => return None,
        };
        Some(Head {
            hash: fnv1a(&window[..len]),
            len: len as u32,
        })
    }
}

/// FNV-1a, 64 bits: stable across releases (the head is stored in the
/// checkpoint), and the input is at most 4 KiB once per file.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// How a file's bytes are stored, told by its first bytes (not its name:
/// a text or JSON line never starts with either magic number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Plain,
    Gzip,
    Zstd,
}

impl Stored {
    fn detect(start: &[u8]) -> Stored {
        if start.starts_with(&[0x1f, 0x8b]) {
            Stored::Gzip
        } else if start.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Stored::Zstd
        } else {
            Stored::Plain
        }
    }
}

/// One file of the chain as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub id: FileId,
    /// `_main.log`, the one being written.
    pub active: bool,
}

/// The files of the chain, oldest first, `_main.log` last (if present).
/// Where a slot holds a plain file and its compressed copy (for the moment
/// the compressor puts the copy in place), the plain one is listed.
pub fn list(dir: &Path, max_files: usize) -> io::Result<Vec<Entry>> {
    let mut entries = Vec::with_capacity(max_files);
    for slot in (0..max_files.saturating_sub(1)).rev() {
        let plain = rotated_name(slot);
        for name in [plain.clone(), format!("{plain}.gz"), format!("{plain}.zst")] {
            if let Some(id) = regular_file(&dir.join(&name))? {
                entries.push(Entry {
                    name,
                    id,
                    active: false,
                });
                break;
            }
        }
    }
    if let Some(id) = active(dir)? {
        entries.push(Entry {
            name: ACTIVE.to_string(),
            id,
            active: true,
        });
    }
    Ok(entries)
}

/// Which file `_main.log` is now, if it is a regular file.
pub fn active(dir: &Path) -> io::Result<Option<FileId>> {
    regular_file(&dir.join(ACTIVE))
}

fn regular_file(path: &Path) -> io::Result<Option<FileId>> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => Ok(Some((m.dev(), m.ino()))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Opens a listed file for reading, or `None` if the name no longer holds
/// that file (rotation moved it on since the listing).
pub fn open(dir: &Path, entry: &Entry) -> io::Result<Option<File>> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(dir.join(&entry.name))
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // ELOOP: a link was put at the name since the listing.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(None),
        Err(e) => return Err(e),
    };
    let m = file.metadata()?;
    Ok((m.file_type().is_file() && (m.dev(), m.ino()) == entry.id).then_some(file))
}

/// Anything a file's bytes can be read from at an offset: an open [`File`],
/// or the writer's handle on a file rotation removed.
pub trait ReadAt {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }
}

/// A [`Read`] over a [`ReadAt`] from offset 0, for the decompressors.
struct Sequential<R> {
    inner: R,
    pos: u64,
}

impl<R: ReadAt> Read for Sequential<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A file's content, uncompressed, read front to back.
enum Source<R: ReadAt> {
    /// Read in place: a plain file may still grow (the active one).
    Plain(R),
    /// A compressed file is complete (the finisher renames it into place
    /// only once written and synced): read through once.
    Decoded(Box<dyn Read + Send>),
}

impl<R: ReadAt + Send + 'static> Source<R> {
    fn new(inner: R) -> io::Result<Self> {
        let mut magic = [0u8; 4];
        let n = read_full_at(&inner, &mut magic, 0)?;
        let seq = Sequential { inner, pos: 0 };
        Ok(match Stored::detect(&magic[..n]) {
            Stored::Plain => Source::Plain(seq.inner),
            // Concatenated members are one stream, as gzip(1) reads them.
            Stored::Gzip => Source::Decoded(Box::new(flate2::read::MultiGzDecoder::new(
                io::BufReader::with_capacity(READ_CHUNK, seq),
            ))),
            Stored::Zstd => Source::Decoded(Box::new(zstd::Decoder::new(seq)?)),
        })
    }
}

fn read_full_at(r: &impl ReadAt, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The lines of one file, from an offset on: what the forwarder reads.
pub struct Tail<R: ReadAt = File> {
    source: Source<R>,
    /// Uncompressed bytes taken from the source so far.
    read: u64,
    /// Bytes read, from the start of the first line not yet handed out.
    buf: Vec<u8>,
    /// Where in `buf` the first line not handed out starts.
    start: usize,
    /// Offset in the file (uncompressed) of the first line not handed out.
    offset: u64,
}

impl<R: ReadAt> std::fmt::Debug for Tail<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tail")
            .field("offset", &self.offset)
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

impl<R: ReadAt + Send + 'static> Tail<R> {
    /// Starts reading `inner` at `offset` (a line boundary, from a
    /// checkpoint; 0 for a new file).
    pub fn new(inner: R, offset: u64) -> io::Result<Self> {
        let mut tail = Tail {
            source: Source::new(inner)?,
            read: 0,
            buf: Vec::with_capacity(READ_CHUNK),
            start: 0,
            offset: 0,
        };
        if let Source::Decoded(_) = tail.source {
            // Decompress and drop what was shipped before.
            while tail.read < offset {
                tail.buf.clear();
                let want = (offset - tail.read).min(READ_CHUNK as u64) as usize;
                if tail.fill_up_to(want)? == 0 {
                    break;
                }
            }
            tail.buf.clear();
        } else {
            tail.read = offset;
        }
        tail.offset = tail.read;
        Ok(tail)
    }

    /// Offset (uncompressed) of the first line not handed out yet: where a
    /// checkpoint resumes.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads more of the file; `Ok(0)` at its current end.
    pub fn fill(&mut self) -> io::Result<usize> {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > self.buf.capacity() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.fill_up_to(READ_CHUNK)
    }

    fn fill_up_to(&mut self, want: usize) -> io::Result<usize> {
        let at = self.buf.len();
        self.buf.resize(at + want, 0);
        let got = loop {
            let r = match &mut self.source {
                Source::Plain(f) => f.read_at(&mut self.buf[at..], self.read),
                Source::Decoded(d) => d.read(&mut self.buf[at..]),
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        self.buf.truncate(at + *got.as_ref().unwrap_or(&0));
        let n = got?;
        self.read += n as u64;
        Ok(n)
    }

    /// The next complete line (without its newline), if one was read. A
    /// last line without its newline is not handed out: the writer may be
    /// in the middle of it.
    pub fn next_line(&mut self) -> Option<&[u8]> {
        let rest = &self.buf[self.start..];
        let end = memchr::memchr(b'\n', rest)?;
        let line = &self.buf[self.start..self.start + end];
        self.start += end + 1;
        self.offset += end as u64 + 1;
        Some(line)
    }

    /// Bytes read but not handed out (an incomplete last line).
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// The head of a file read through `inner`, if its first line is complete.
pub fn head_of<R: ReadAt + Send + 'static>(inner: R) -> io::Result<Option<Head>> {
    let mut tail = Tail::new(inner, 0)?;
    while tail.buf.len() < HEAD_BYTES {
        if tail.fill_up_to(HEAD_BYTES - tail.buf.len())? == 0 {
            break;
        }
    }
    Ok(Head::of(&tail.buf))
}

/// Lines in a file (its newlines), reading it through once.
pub fn count_lines<R: ReadAt + Send + 'static>(inner: R) -> io::Result<u64> {
    let mut tail = Tail::new(inner, 0)?;
    let mut lines = 0u64;
    loop {
        tail.buf.clear();
        if tail.fill_up_to(READ_CHUNK)? == 0 {
            return Ok(lines);
        }
        lines += memchr::memchr_iter(b'\n', &tail.buf).count() as u64;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) {
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(bytes).unwrap();
        z.finish().unwrap()
    }

    fn lines_of(tail: &mut Tail) -> Vec<String> {
        let mut out = Vec::new();
        while tail.fill().unwrap() > 0 {
            while let Some(l) = tail.next_line() {
                out.push(String::from_utf8(l.to_vec()).unwrap());
            }
        }
        out
    }

    #[test]
    fn the_chain_is_listed_oldest_first_with_the_active_file_last() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "_main.log", b"a\n");
        write(d.path(), "_main.log.0", b"b\n");
        write(d.path(), "_main.log.1.gz", &gz(b"c\n"));
        write(
            d.path(),
            "_main.log.2.zst",
            &zstd::encode_all(&b"d\n"[..], 1).unwrap(),
        );
        // The moment the compressor has put the copy beside the plain file.
        write(d.path(), "_main.log.3", b"e\n");
        write(d.path(), "_main.log.3.gz", &gz(b"e\n"));
        // Beyond the chain of 5 files: not ours.
        write(d.path(), "_main.log.4", b"f\n");
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("_main.log.9")).unwrap();
        let names = |max_files| -> Vec<String> {
            list(d.path(), max_files)
                .unwrap()
                .into_iter()
                .map(|e| e.name)
                .collect()
        };
        assert_eq!(
            names(5),
            [
                "_main.log.3",
                "_main.log.2.zst",
                "_main.log.1.gz",
                "_main.log.0",
                "_main.log"
            ]
        );
        let all = names(11);
        assert!(
            !all.contains(&"_main.log.9".to_string()),
            "a link is not listed: {all:?}"
        );
    }

    #[test]
    fn a_file_has_the_same_head_plain_and_compressed_and_lines_resume_at_an_offset() {
        let d = tempfile::tempdir().unwrap();
        let text = b"first line\nsecond\nthird\n";
        write(d.path(), "p", text);
        write(d.path(), "g", &gz(text));
        write(d.path(), "z", &zstd::encode_all(&text[..], 1).unwrap());
        let open = |n: &str| File::open(d.path().join(n)).unwrap();
        let heads: Vec<_> = ["p", "g", "z"]
            .iter()
            .map(|n| head_of(open(n)).unwrap())
            .collect();
        assert!(heads[0].is_some());
        assert!(heads.iter().all(|h| *h == heads[0]), "{heads:?}");
        for n in ["p", "g", "z"] {
            assert_eq!(count_lines(open(n)).unwrap(), 3, "{n}");
            let mut tail = Tail::new(open(n), 11).unwrap();
            assert_eq!(lines_of(&mut tail), ["second", "third"], "{n}");
            assert_eq!(tail.offset(), text.len() as u64);
        }
    }

    #[test]
    fn a_line_still_being_written_is_not_handed_out_until_it_is_whole() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("_main.log");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"one\ntw").unwrap();
        let mut tail = Tail::new(File::open(&path).unwrap(), 0).unwrap();
        assert_eq!(lines_of(&mut tail), ["one"]);
        assert_eq!(tail.offset(), 4);
        assert_eq!(tail.pending(), 2);
        f.write_all(b"o\nthree\n").unwrap();
        assert_eq!(lines_of(&mut tail), ["two", "three"]);
        assert_eq!(tail.offset(), 14);
    }

    #[test]
    fn a_head_needs_a_whole_first_line_or_its_full_window() {
        assert_eq!(Head::of(b"partial"), None);
        assert!(Head::of(b"x\n").is_some());
        assert_ne!(Head::of(b"x\n"), Head::of(b"y\n"));
        // Only the first line counts: later lines do not change it.
        assert_eq!(Head::of(b"x\n"), Head::of(b"x\nmore\n"));
        let long = vec![b'a'; HEAD_BYTES + 10];
        assert_eq!(Head::of(&long).map(|h| h.len as usize), Some(HEAD_BYTES));
    }
}
