//! Reads every `_main.log*` file back (memory-mapped) and checks that each
//! stream's messages are there exactly once and in the order sent.

use std::{
    fs::File,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use log_server_wire::output::{rotated_name, ACTIVE};
use memmap2::Mmap;

use crate::template::COUNTER_DIGITS;

#[derive(Debug, Default)]
pub(crate) struct Verdict {
    /// Messages of this run found.
    pub found: u64,
    pub missing: u64,
    pub duplicate: u64,
    pub out_of_order: u64,
    /// Oldest messages no longer on disk because rotation removed the files
    /// they were in (every message after them is there). Not a loss of the
    /// server's: raise --max_files or --max_file_size to keep a whole run.
    pub rotated_out: u64,
}

impl Verdict {
    pub(crate) fn is_clean(&self) -> bool {
        self.missing == 0 && self.duplicate == 0 && self.out_of_order == 0
    }
}

/// Waits until the files account for every message sent (or nothing has
/// changed for 2 s, or `timeout`), then checks them. `sent[s]` is the count
/// sent on stream `s`; `max_files` is the server's `--max_files`.
pub(crate) fn verify(
    dir: &Path,
    sent: &[u64],
    max_files: usize,
    timeout: Duration,
) -> anyhow::Result<Verdict> {
    let expected: u64 = sent.iter().sum();
    let deadline = Instant::now() + timeout;
    let mut last = (u64::MAX, Instant::now());
    loop {
        let verdict = check(dir, sent, max_files)?;
        let accounted = verdict.found + verdict.rotated_out;
        if accounted >= expected
            || Instant::now() >= deadline
            || last.1.elapsed() >= Duration::from_secs(2)
        {
            return Ok(verdict);
        }
        if accounted != last.0 {
            last = (accounted, Instant::now());
        }
        thread::sleep(Duration::from_millis(250));
    }
}

fn check(dir: &Path, sent: &[u64], max_files: usize) -> anyhow::Result<Verdict> {
    // Per stream: the next counter expected and which counters were seen.
    let mut next = vec![0u64; sent.len()];
    let mut seen: Vec<Vec<bool>> = sent.iter().map(|&n| vec![false; n as usize]).collect();
    let mut v = Verdict::default();
    let mut names: Vec<String> = (0..max_files.saturating_sub(1))
        .rev()
        .map(rotated_name)
        .collect();
    names.push(ACTIVE.to_string());
    // Rotation removes a file only once the chain is full: without the
    // oldest slot there (plain or compressed), a missing prefix is a loss,
    // not rotation's doing.
    let chain_full = max_files >= 2 && slot_exists(dir, &names[0]);
    for name in names {
        let Some(map) = read_slot(dir, &name)? else {
            continue;
        };
        for at in memchr::memmem::find_iter(&map, b"lg c=") {
            let Some((stream, n)) = parse(&map[at..]) else {
                continue;
            };
            let (Some(seen), Some(next)) = (seen.get_mut(stream), next.get_mut(stream)) else {
                continue;
            };
            let Some(slot) = seen.get_mut(n as usize) else {
                continue;
            };
            if *slot {
                v.duplicate += 1;
                continue;
            }
            *slot = true;
            v.found += 1;
            if n < *next {
                v.out_of_order += 1;
            }
            *next = (*next).max(n + 1);
        }
    }
    // A stream whose oldest messages are gone but whose messages from the
    // first one found onward are all there lost them to rotation, if the
    // chain is full (so rotation has been removing files).
    for seen in seen.iter().filter(|_| chain_full) {
        let Some(first) = seen.iter().position(|&x| x) else {
            continue;
        };
        if first > 0 && seen[first..].iter().all(|&x| x) {
            v.rotated_out += first as u64;
        }
    }
    v.missing = sent.iter().sum::<u64>() - v.found - v.rotated_out;
    Ok(v)
}

/// The bytes of a slot: the plain file memory-mapped, or a rotated file
/// compressed by `--compress` (`.gz`, `.zst`) decompressed in memory.
/// `None` if the slot is empty.
fn read_slot(dir: &Path, name: &str) -> anyhow::Result<Option<Bytes>> {
    let path = dir.join(name);
    if let Ok(file) = File::open(&path) {
        if file.metadata()?.len() == 0 {
            return Ok(None);
        }
        // SAFETY: the file is only read; a concurrent append by the server
        // does not change the mapped prefix.
        let map =
            unsafe { Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))?;
        return Ok(Some(Bytes::Mapped(map)));
    }
    let gz = dir.join(format!("{name}.gz"));
    if let Ok(file) = File::open(&gz) {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(file), &mut bytes)
            .with_context(|| format!("decompressing {}", gz.display()))?;
        return Ok(Some(Bytes::Owned(bytes)));
    }
    let zst = dir.join(format!("{name}.zst"));
    if let Ok(file) = File::open(&zst) {
        let bytes =
            zstd::decode_all(file).with_context(|| format!("decompressing {}", zst.display()))?;
        return Ok(Some(Bytes::Owned(bytes)));
    }
    Ok(None)
}

fn slot_exists(dir: &Path, name: &str) -> bool {
    ["", ".gz", ".zst"]
        .iter()
        .any(|s| dir.join(format!("{name}{s}")).exists())
}

/// A slot's bytes, mapped or decompressed.
enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// `lg c=SSSS n=DDDDDDDDDD` -> (stream, counter).
fn parse(b: &[u8]) -> Option<(usize, u64)> {
    let digits = |s: &[u8]| -> Option<u64> {
        s.iter().try_fold(0u64, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + u64::from(d - b'0'))
        })
    };
    let stream = digits(b.get(5..9)?)? as usize;
    if b.get(9..12)? != b" n=" {
        return None;
    }
    let n = digits(b.get(12..12 + COUNTER_DIGITS)?)?;
    Some((stream, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_missing_duplicate_and_out_of_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("_main.log.0"),
            "x lg c=0000 n=0000000000 a\nx lg c=0001 n=0000000000 a\nx lg c=0000 n=0000000002 a\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("_main.log"),
            "x lg c=0000 n=0000000001 a\nx lg c=0000 n=0000000002 a\nnoise lg c=zz\n",
        )
        .unwrap();
        let v = check(dir.path(), &[4, 2], 10).unwrap();
        assert_eq!(
            (v.found, v.missing, v.duplicate, v.out_of_order),
            (4, 2, 1, 1)
        );
        assert!(!v.is_clean());
        let v = check(dir.path(), &[3, 1], 10).unwrap();
        assert_eq!((v.found, v.missing, v.duplicate), (4, 0, 1));
    }

    #[test]
    fn a_prefix_removed_by_rotation_is_not_a_loss() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("_main.log.0"), "lg c=0000 n=0000000002\n").unwrap();
        std::fs::write(dir.path().join("_main.log"), "lg c=0000 n=0000000003\n").unwrap();
        // --max_files 2: _main.log.0 is the oldest slot, the chain is full.
        let v = check(dir.path(), &[4], 2).unwrap();
        assert_eq!((v.found, v.rotated_out, v.missing), (2, 2, 0));
        assert!(v.is_clean());
    }

    #[test]
    fn compressed_rotated_files_are_read_too() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(b"lg c=0000 n=0000000000\n").unwrap();
        std::fs::write(dir.path().join("_main.log.1.gz"), z.finish().unwrap()).unwrap();
        let zst = zstd::encode_all(&b"lg c=0000 n=0000000001\n"[..], 3).unwrap();
        std::fs::write(dir.path().join("_main.log.0.zst"), zst).unwrap();
        std::fs::write(dir.path().join("_main.log"), "lg c=0000 n=0000000002\n").unwrap();
        let v = check(dir.path(), &[3], 3).unwrap();
        assert_eq!(
            (v.found, v.missing, v.duplicate, v.out_of_order),
            (3, 0, 0, 0)
        );
    }

    #[test]
    fn a_missing_prefix_without_a_full_chain_is_a_loss() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("_main.log"),
            "lg c=0000 n=0000000002\nlg c=0000 n=0000000003\n",
        )
        .unwrap();
        // Nothing was rotated out of a chain of 10 with one file in it.
        let v = check(dir.path(), &[4], 10).unwrap();
        assert_eq!((v.found, v.rotated_out, v.missing), (2, 0, 2));
        assert!(!v.is_clean());
    }
}
