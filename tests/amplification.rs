//! Amplification frames end to end (issue 9, point 1): a few KiB on the
//! wire that reference megabytes, sent next to a well-behaved client.

use std::thread;

use log_server::{
    format::TRUNCATED_MARK,
    ingest::tcp::{uring_available, IoEngine},
};
use log_server_wire::{
    encode::{Packing, RawLoggerMsg},
    frame::write_frame,
};

use crate::util::*;

const BOMBS: usize = 20;

/// 20 frames of ~4 KiB whose 15 text pointers alias one list of ~4 MiB of
/// zeros (refused: 60 MiB referenced, against a traversal limit of 4 MiB
/// and of the message's own size), each followed by a "heavy" frame of the
/// same size whose message field alone holds the ~4 MiB of zeros (a valid
/// message: accepted, 16 MiB once escaped, cut to fit the line limit).
/// Returns the stream and the size of its frames unpacked.
fn bomb_stream(max_frame_size: usize) -> (Vec<u8>, usize) {
    let mut msg = RawLoggerMsg::aliased_zeros(max_frame_size - 4096);
    let bomb = msg.payload(Packing::Packed);
    msg.fields = Default::default();
    msg.fields[7] = Some(0);
    let heavy = msg.payload(Packing::Packed);
    assert!(bomb.len() < 8 * 1024 && heavy.len() < 8 * 1024);
    let unpacked = msg.payload(Packing::Unpacked).len();
    let mut stream = Vec::new();
    log_server_wire::encode::push_hello_frame(&mut stream, "bomb", "attacker");
    for _ in 0..BOMBS {
        write_frame(&mut stream, &bomb);
        write_frame(&mut stream, &heavy);
    }
    (stream, unpacked)
}

fn bombs_next_to_a_good_client(engine: IoEngine) {
    const GOOD: usize = 2_000;
    let mut s = TestServer::start_with(|c| c.io_engine = engine);
    let max_line = s.config.writer.max_file_size as usize;
    let addr = s.addr();
    let (stream, unpacked) = bomb_stream(s.config.max_frame_size);
    let sent = stream.len();
    let attacker = thread::spawn(move || send(addr, &stream));
    let good = thread::spawn(move || send(addr, &frames(0, GOOD, true, Some(100))));
    attacker.join().unwrap();
    good.join().unwrap();
    s.wait_written((GOOD + BOMBS) as u64);
    let stats = s.server().ingest_stats().clone();
    let lines = s.stop();

    // The aliased bombs were refused; nothing else was.
    assert_eq!(stats.decode_errors.get(), BOMBS as u64);
    // The good client lost nothing, in order.
    let (heavy, good): (Vec<_>, Vec<_>) =
        lines.iter().cloned().partition(|l| l.contains(r"\x00\x00"));
    assert_all_once_in_order(&good, &[GOOD]);
    // Each heavy frame is one line, cut, and no line is over the limit.
    assert_eq!(heavy.len(), BOMBS);
    for line in &lines {
        assert!(line.len() < max_line, "a line of {} bytes", line.len());
    }
    for line in &heavy {
        assert!(line.contains(TRUNCATED_MARK));
    }
    // What the attacker's frames cost in the files: nothing for the 20
    // refused bombs; for each accepted frame one line of at most
    // --max_file_size and at most 4 bytes per unpacked byte (here the line
    // cap holds each field to 1/64 of the line limit: ~165 KB a line).
    let per_frame = max_line.min(4 * unpacked + 1024);
    let written: usize = heavy.iter().map(|l| l.len() + 1).sum();
    assert!(written <= BOMBS * per_frame, "{written} bytes written");
    eprintln!(
        "{engine:?}: the attacker sent {sent} bytes; {written} bytes were written for its \
         frames (bound {} = {BOMBS} x {per_frame})",
        BOMBS * per_frame
    );
}

/// 20 bomb frames and 20 heavy ones from one client, 2,000 messages from
/// another at the same time: the bombs are refused, the heavy frames are
/// one cut line each, the good client's messages are all written in order,
/// and no line is longer than a file allows.
#[test]
fn bomb_frames_are_refused_or_bounded_and_a_good_client_loses_nothing() {
    bombs_next_to_a_good_client(IoEngine::Epoll);
    match uring_available() {
        Ok(()) => bombs_next_to_a_good_client(IoEngine::Uring),
        Err(e) => {
            eprintln!("SKIPPED the io_uring half of this test: io_uring is unavailable here ({e})")
        }
    }
}
