//! TCP framing (docs/PROTOCOL.md): every frame is a big-endian `u32` payload
//! length followed by that many payload bytes; a length of zero is a
//! heartbeat.
//!
//! First stage of the TCP ingest path, before `decode`. Pure: it looks at
//! bytes a connection has buffered and says what is there, without I/O and
//! without allocating. An incomplete frame is a normal state, not an error.

use thiserror::Error;

/// Bytes of the length prefix.
pub const PREFIX_LEN: usize = 4;

/// Default `--max_frame_size`: the largest payload accepted, in bytes.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 4 * 1024 * 1024;

/// One complete frame found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A zero-length frame: the client is alive and has nothing to say.
    Heartbeat,
    /// The payload of a frame (one Cap'n Proto message).
    Payload(&'a [u8]),
}

/// A stream that cannot be framed any further.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The length prefix is larger than the configured maximum. The
    /// connection must be closed: nothing after it can be trusted to be a
    /// frame boundary.
    #[error("frame length {len} exceeds the maximum frame size of {max} bytes")]
    TooLarge { len: u64, max: usize },
}

/// Looks for one complete frame at the start of `buf`.
///
/// Returns `Ok(Some((frame, consumed)))` when a whole frame is buffered,
/// `Ok(None)` when more bytes are needed, and an error when the declared
/// length is above `max_len` (checked as soon as the prefix is complete, so
/// an oversized frame is refused before any of it is buffered).
pub fn parse(buf: &[u8], max_len: usize) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let Some(prefix) = buf.first_chunk::<PREFIX_LEN>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*prefix);
    if len as u64 > max_len as u64 {
        return Err(FrameError::TooLarge {
            len: u64::from(len),
            max: max_len,
        });
    }
    let len = len as usize;
    if len == 0 {
        return Ok(Some((Frame::Heartbeat, PREFIX_LEN)));
    }
    let end = PREFIX_LEN + len;
    match buf.get(PREFIX_LEN..end) {
        Some(payload) => Ok(Some((Frame::Payload(payload), end))),
        None => Ok(None),
    }
}

/// Iterates over the complete frames at the start of a buffer.
///
/// After the iterator returns `None`, [`Frames::consumed`] is the length of
/// the prefix of the buffer that held complete frames; the rest is a partial
/// frame to keep for the next read. After an error the iterator is done.
#[derive(Debug)]
pub struct Frames<'a> {
    buf: &'a [u8],
    pos: usize,
    max_len: usize,
    failed: bool,
}

impl<'a> Frames<'a> {
    pub fn new(buf: &'a [u8], max_len: usize) -> Self {
        Frames {
            buf,
            pos: 0,
            max_len,
            failed: false,
        }
    }

    /// Bytes of the buffer taken by the frames returned so far.
    pub fn consumed(&self) -> usize {
        self.pos
    }

    /// Total buffer length needed to complete the frame that starts at
    /// [`Frames::consumed`], when its length prefix is already buffered: lets
    /// a reader grow its buffer once to the right size.
    pub fn pending_frame_len(&self) -> Option<usize> {
        let rest = self.buf.get(self.pos..)?;
        let prefix = rest.first_chunk::<PREFIX_LEN>()?;
        let len = u32::from_be_bytes(*prefix) as usize;
        (len <= self.max_len).then_some(self.pos + PREFIX_LEN + len)
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match parse(&self.buf[self.pos..], self.max_len) {
            Ok(Some((frame, used))) => {
                self.pos += used;
                Some(Ok(frame))
            }
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Appends one frame holding `payload` to `out`.
///
/// # Panics
/// If `payload` is longer than `u32::MAX` bytes, which no frame can carry.
pub fn write_frame(out: &mut Vec<u8>, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("a frame payload fits in u32");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_consecutive_frames_and_keeps_the_partial_tail() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"abc");
        buf.extend_from_slice(&[0, 0, 0, 0]);
        write_frame(&mut buf, b"defgh");
        let whole = buf.len();
        buf.extend_from_slice(&[0, 0, 0, 9, b'x']);

        let mut frames = Frames::new(&buf, 16);
        assert_eq!(frames.next(), Some(Ok(Frame::Payload(b"abc"))));
        assert_eq!(frames.next(), Some(Ok(Frame::Heartbeat)));
        assert_eq!(frames.next(), Some(Ok(Frame::Payload(b"defgh"))));
        assert_eq!(frames.next(), None);
        assert_eq!(frames.consumed(), whole);
        assert_eq!(frames.pending_frame_len(), Some(whole + 4 + 9));
    }

    #[test]
    fn every_split_point_yields_the_same_frames() {
        let mut buf = Vec::new();
        for i in 0..20u8 {
            write_frame(&mut buf, &vec![i; usize::from(i) * 3]);
        }
        let expected: Vec<Vec<u8>> = Frames::new(&buf, 1024)
            .map(|f| match f.unwrap() {
                Frame::Payload(p) => p.to_vec(),
                Frame::Heartbeat => Vec::new(),
            })
            .collect();
        assert_eq!(expected.len(), 20);
        // Feed the stream in two reads split at every byte and reassemble the
        // way a connection does: keep the unconsumed tail, append the rest.
        for split in 0..=buf.len() {
            let mut got = Vec::new();
            let mut pending = buf[..split].to_vec();
            for chunk in [&buf[split..], &[][..]] {
                let mut frames = Frames::new(&pending, 1024);
                for f in frames.by_ref() {
                    got.push(match f.unwrap() {
                        Frame::Payload(p) => p.to_vec(),
                        Frame::Heartbeat => Vec::new(),
                    });
                }
                let used = frames.consumed();
                pending.drain(..used);
                pending.extend_from_slice(chunk);
            }
            assert_eq!(got, expected, "split at byte {split}");
            assert!(pending.is_empty());
        }
    }

    #[test]
    fn incomplete_prefix_and_payload_need_more_bytes() {
        assert_eq!(parse(&[], 10), Ok(None));
        assert_eq!(parse(&[0, 0, 0], 10), Ok(None));
        assert_eq!(parse(&[0, 0, 0, 5, 1, 2], 10), Ok(None));
    }

    #[test]
    fn oversized_length_is_refused_from_the_prefix_alone() {
        assert_eq!(
            parse(&[0xff, 0xff, 0xff, 0xff], 4096),
            Err(FrameError::TooLarge {
                len: 0xffff_ffff,
                max: 4096
            })
        );
        assert_eq!(
            parse(&[0, 0, 0x10, 0x01], 4096).unwrap_err(),
            FrameError::TooLarge {
                len: 4097,
                max: 4096
            }
        );
        // Exactly the maximum is accepted.
        let mut buf = Vec::new();
        write_frame(&mut buf, &[7; 4096]);
        assert!(
            matches!(parse(&buf, 4096), Ok(Some((Frame::Payload(p), 4100))) if p.len() == 4096)
        );
        let mut frames = Frames::new(&[0xff, 0xff, 0xff, 0xff, 1], 8);
        assert!(frames.next().unwrap().is_err());
        assert_eq!(frames.next(), None);
    }
}
