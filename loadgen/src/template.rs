//! One pre-encoded message per stream with a counter patched in place, so
//! generating a message costs a memcpy and ten digit writes.
//!
//! The counter's byte positions are found by encoding the message twice
//! with different digits and comparing: digits are never zero bytes, so
//! Cap'n Proto packing keeps the same layout for every counter value.

use log_server_wire::{
    encode::{push_logger_frame, Packing},
    fields::{Fields, Level},
};

/// Digits of the counter in every message.
pub(crate) const COUNTER_DIGITS: usize = 10;

/// The text of a message: stream id and counter, then padding. `verify`
/// parses exactly this.
pub(crate) fn message_text(stream: usize, counter: &str, padding: usize) -> String {
    format!("lg c={stream:04} n={counter} {}", "x".repeat(padding))
}

#[derive(Debug, Clone)]
pub(crate) struct Template {
    bytes: Vec<u8>,
    /// Where the counter's digits are, most significant first.
    digits: Vec<usize>,
}

impl Template {
    /// Builds a template from an encoder of a message given its counter
    /// digits; the message is padded so that it is about `size` bytes.
    pub(crate) fn new(size: usize, encode: impl Fn(&str, usize) -> Vec<u8>) -> Self {
        let ones = "1".repeat(COUNTER_DIGITS);
        let bare = encode(&ones, 0).len();
        let padding = size.saturating_sub(bare);
        let a = encode(&ones, padding);
        let b = encode(&"2".repeat(COUNTER_DIGITS), padding);
        assert_eq!(
            a.len(),
            b.len(),
            "the counter changed the encoding's layout"
        );
        let digits: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
        assert_eq!(
            digits.len(),
            COUNTER_DIGITS,
            "the counter's bytes were not found"
        );
        Template { bytes: a, digits }
    }

    /// A TCP frame (length prefix + packed LoggerMsg) of stream `stream`.
    pub(crate) fn tcp(stream: usize, size: usize) -> Self {
        Template::new(size, |digits, padding| {
            let text = message_text(stream, digits, padding);
            let mut out = Vec::new();
            push_logger_frame(&mut out, &fields(&text), Packing::Packed);
            out
        })
    }

    /// An RFC 5424 syslog line of stream `stream`.
    pub(crate) fn syslog(stream: usize, size: usize) -> Self {
        Template::new(size, |digits, padding| {
            format!(
                "<14>1 2026-01-02T15:04:05.000000Z loadgen-host loadgen {} - - {}\n",
                std::process::id(),
                message_text(stream, digits, padding)
            )
            .into_bytes()
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Appends the message with counter `n`.
    pub(crate) fn push(&self, n: u64, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        let mut v = n;
        for &at in self.digits.iter().rev() {
            out[start + at] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
}

/// The fields of a loadgen message around its text.
pub(crate) fn fields(text: &str) -> Fields<'_> {
    Fields {
        timestamp: "2026-01-02T15:04:05.000000000Z",
        hostname: "loadgen-host",
        logger_name: "loadgen",
        level: Level(3),
        filename: "loadgen.rs",
        function_name: "send",
        line_number: "1",
        message: text,
        ..Fields::default()
    }
}

#[cfg(test)]
mod tests {
    use log_server_wire::{
        decode::{DecodedBatch, Decoder},
        frame::{parse, Frame},
    };

    use super::*;

    #[test]
    fn patched_frames_decode_to_the_right_counter() {
        let t = Template::tcp(7, 200);
        assert!((190..=215).contains(&t.len()), "frame of {} bytes", t.len());
        let mut decoder = Decoder::new(1 << 20);
        for n in [0u64, 9, 1_234_567_890, 42] {
            let mut frame = Vec::new();
            t.push(n, &mut frame);
            let Ok(Some((Frame::Payload(p), used))) = parse(&frame, 1 << 20) else {
                panic!("not a frame")
            };
            assert_eq!(used, frame.len());
            let mut batch = DecodedBatch::default();
            decoder.decode(p, &mut batch).unwrap();
            assert!(
                batch
                    .get(0)
                    .message
                    .starts_with(&format!("lg c=0007 n={n:010} ")),
                "{}",
                batch.get(0).message
            );
        }
    }

    #[test]
    fn syslog_lines_carry_the_counter() {
        let t = Template::syslog(3, 200);
        let mut out = Vec::new();
        t.push(55, &mut out);
        let line = String::from_utf8(out).unwrap();
        assert_eq!(line.len(), 200);
        assert!(line.contains("lg c=0003 n=0000000055 "), "{line}");
    }
}
