//! Golden tests of the line formats: whole lines compared to exact strings.

use super::*;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log_server_wire::fields::{Fields, Level, RawFields, TEXT_FIELDS};

const TS: &str = "2026-01-02T15:04:05.000000000Z";

/// A record with every column set to short ASCII and no metadata.
fn basic() -> Fields<'static> {
    Fields {
        timestamp: TS,
        hostname: "host1",
        logger_name: "app",
        level: Level(3),
        filename: "main.py",
        function_name: "run",
        line_number: "42",
        message: "hello",
        ..Fields::default()
    }
}

/// A line with no end, for the helpers that format without a limit.
fn unbounded(out: &mut Vec<u8>) -> Line<'_> {
    Line {
        out,
        end: usize::MAX,
    }
}

/// The text line of `f`, uncapped, as a `String` (panics on invalid UTF-8).
fn text_line(f: &Fields<'_>) -> String {
    let mut out = Vec::new();
    write_text(&f.into(), &[], usize::MAX, &mut unbounded(&mut out)).unwrap();
    String::from_utf8(out).expect("a text line is valid UTF-8")
}

/// The JSON line of `f`, uncapped.
fn json_line(f: &Fields<'_>, seq: u64, at: &ReceivedAt) -> String {
    let mut out = Vec::new();
    write_json(
        &f.into(),
        &[],
        seq,
        at,
        usize::MAX,
        &mut unbounded(&mut out),
    )
    .unwrap();
    String::from_utf8(out).expect("a JSON line is valid UTF-8")
}

/// The columns part of a text line (everything before the message), built
/// independently with `format!` padding, which counts characters.
#[allow(clippy::too_many_arguments)]
fn cols(
    ts: &str,
    host: &str,
    logger: &str,
    level: &str,
    file: &str,
    func: &str,
    line: &str,
) -> String {
    format!("{ts:<33} {host:<12} {logger:<22} {level:<10} {file:<20} {func:<25} {line:<6} ")
}

/// Characters before the message column: 7 columns and 7 separators.
const MESSAGE_COL: usize = 33 + 1 + 12 + 1 + 22 + 1 + 10 + 1 + 20 + 1 + 25 + 1 + 6 + 1;

fn at(secs: u64, nanos: u32) -> ReceivedAt {
    ReceivedAt::new(UNIX_EPOCH + Duration::new(secs, nanos))
}

// ---------------------------------------------------------------- columns

#[test]
fn text_line_with_short_ascii_fields_has_exact_columns() {
    let expected = concat!(
        "2026-01-02T15:04:05.000000000Z",
        "    ", // 3 padding + separator
        "host1",
        "        ", // 7 + 1
        "app",
        "                    ", // 19 + 1
        "INFO",
        "       ", // 6 + 1
        "main.py",
        "              ", // 13 + 1
        "run",
        "                       ", // 22 + 1
        "42",
        "     ", // 4 + 1
        "hello\n",
    );
    let line = text_line(&basic());
    assert_eq!(line, expected);
    assert_eq!(
        line,
        cols(TS, "host1", "app", "INFO", "main.py", "run", "42") + "hello\n"
    );
    assert_eq!(line.find("hello"), Some(MESSAGE_COL));
    assert!(!line.contains("[metadata:"));
    assert_eq!(line.matches('\n').count(), 1);
}

#[test]
fn formatter_write_matches_write_text_and_appends() {
    let f = basic();
    let fmt = LineFormatter::new(LineFormat::Text, 10 * 1024 * 1024);
    assert_eq!(fmt.format(), LineFormat::Text);
    let mut out = b"previous line\n".to_vec();
    assert!(!fmt.write(&f, 1, &at(0, 0), &mut out));
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("previous line\n{}", text_line(&f))
    );
}

#[test]
fn empty_fields_are_all_padding() {
    let line = text_line(&Fields::default());
    assert_eq!(line, cols("", "", "", "NOTSET", "", "", "") + "\n");
    assert_eq!(line.chars().count(), MESSAGE_COL + 1);
}

#[test]
fn fields_exactly_at_width_are_not_padded_nor_cut() {
    let f = Fields {
        timestamp: "123456789012345678901234567890123",
        hostname: "abcdefghijkl",
        logger_name: "abcdefghijklmnopqrstuv",
        level: Level(11),
        filename: "abcdefghijklmnopqrst",
        function_name: "abcdefghijklmnopqrstuvwxy",
        line_number: "123456",
        message: "m",
        ..Fields::default()
    };
    assert_eq!(
        text_line(&f),
        "123456789012345678901234567890123 abcdefghijkl abcdefghijklmnopqrstuv CRITICAL   \
         abcdefghijklmnopqrst abcdefghijklmnopqrstuvwxy 123456 m\n"
    );
}

#[test]
fn long_columns_are_cut_at_their_width() {
    let f = Fields {
        timestamp: TS,
        hostname: "a-very-long-hostname.example.com",
        logger_name: "a.logger.name.that.is.much.too.long",
        level: Level(10),
        filename: "some/very/long/path/to/file.py",
        function_name: "a_function_name_longer_than_twenty_five",
        line_number: "1234567890",
        message: "msg",
        ..Fields::default()
    };
    assert_eq!(
        text_line(&f),
        cols(
            TS,
            "a-very-long-",
            "a.logger.name.that.is.",
            "ERROR",
            "some/very/long/path/",
            "a_function_name_longer_th",
            "123456"
        ) + "msg\n"
    );
}

#[test]
fn long_timestamp_is_not_cut() {
    let ts = "2026-01-02T15:04:05.000000000+00:00 (a timestamp longer than 33)";
    let f = Fields {
        timestamp: ts,
        ..basic()
    };
    let line = text_line(&f);
    assert_eq!(
        line,
        format!(
            "{ts} {}",
            &cols(TS, "host1", "app", "INFO", "main.py", "run", "42")[34..]
        ) + "hello\n"
    );
    assert!(line.starts_with(&format!("{ts} host1        app ")));
}

#[test]
fn multibyte_fields_are_cut_on_character_boundaries_and_padded_in_chars() {
    let cjk = "日本語のロガー名前です長い名前だよ本当に長いですね"; // 25 chars
    let emoji = "😀".repeat(25);
    let f = Fields {
        timestamp: "2026-01-02T15:04:05Z ⏰",
        hostname: "héllo wörld ünïcode",
        logger_name: cjk,
        level: Level(1),
        filename: &emoji,
        function_name: "ünïcode",
        line_number: "ö",
        message: "mëssage ✓ 日本",
        ..Fields::default()
    };
    let line = text_line(&f);
    assert_eq!(
        line,
        cols(
            "2026-01-02T15:04:05Z ⏰",
            "héllo wörld ",
            "日本語のロガー名前です長い名前だよ本当に長い",
            "DEBUG",
            &"😀".repeat(20),
            "ünïcode",
            "ö"
        ) + "mëssage ✓ 日本\n"
    );
    // Padded widths are counted in characters, not bytes.
    let chars: Vec<char> = line.chars().collect();
    assert_eq!(
        chars[..MESSAGE_COL].iter().collect::<String>(),
        line[..line.find("mëssage").unwrap()]
    );
    assert_eq!(
        chars.len(),
        MESSAGE_COL + "mëssage ✓ 日本".chars().count() + 1
    );
    // Spot-check each column start (in chars).
    let col = |start: usize, width: usize| chars[start..start + width].iter().collect::<String>();
    assert_eq!(col(0, 33), format!("{:<33}", "2026-01-02T15:04:05Z ⏰"));
    assert_eq!(col(34, 12), "héllo wörld ");
    assert_eq!(col(47, 22), "日本語のロガー名前です長い名前だよ本当に長い");
    assert_eq!(col(70, 10), "DEBUG     ");
    assert_eq!(col(81, 20), "😀".repeat(20));
    assert_eq!(col(102, 25), format!("{:<25}", "ünïcode"));
    assert_eq!(col(128, 6), "ö     ");
}

#[test]
fn exactly_width_multibyte_field_is_kept_whole() {
    let f = Fields {
        hostname: "éééééééééééé", // 12 chars, 24 bytes
        ..basic()
    };
    assert_eq!(
        text_line(&f),
        cols(TS, "éééééééééééé", "app", "INFO", "main.py", "run", "42") + "hello\n"
    );
}

// ---------------------------------------------------------------- metadata

#[test]
fn metadata_suffix_has_only_non_empty_keys() {
    let f = Fields {
        module: "a",
        process_id: "1",
        stack_trace: "x",
        ..basic()
    };
    assert_eq!(
        text_line(&f),
        text_line(&basic()).trim_end_matches('\n').to_owned()
            + " [metadata: mod=a pid=1 stack=x]\n"
    );
}

#[test]
fn metadata_suffix_keys_in_order() {
    let f = Fields {
        module: "m",
        path_name: "/p/a.py",
        process_id: "123",
        process_name: "proc",
        thread_id: "456",
        thread_name: "main thread",
        service_name: "svc1",
        stack_trace: "Traceback",
        ..basic()
    };
    assert_eq!(
        text_line(&f),
        cols(TS, "host1", "app", "INFO", "main.py", "run", "42")
            + "hello [metadata: mod=m path=/p/a.py pid=123 pname=proc tid=456 tname=main thread svc=svc1 stack=Traceback]\n"
    );
    for (i, key) in ["path", "pname", "tname", "svc"].iter().enumerate() {
        let mut g = basic();
        match i {
            0 => g.path_name = "v",
            1 => g.process_name = "v",
            2 => g.thread_name = "v",
            _ => g.service_name = "v",
        }
        assert_eq!(
            text_line(&g),
            format!(
                "{}hello [metadata: {key}=v]\n",
                cols(TS, "host1", "app", "INFO", "main.py", "run", "42")
            )
        );
    }
}

#[test]
fn metadata_with_empty_message() {
    let f = Fields {
        message: "",
        thread_id: "7",
        ..basic()
    };
    assert_eq!(
        text_line(&f),
        cols(TS, "host1", "app", "INFO", "main.py", "run", "42") + " [metadata: tid=7]\n"
    );
}

// ---------------------------------------------------------------- escaping

#[test]
fn newlines_in_message_are_written_as_bars() {
    for (msg, want) in [
        ("l1\nl2", "l1 | l2"),
        ("l1\rl2", "l1 | l2"),
        ("l1\r\nl2", "l1 | l2"),
        ("l1\n\rl2", "l1 |  | l2"),
        ("l1\r\r\nl2", "l1 |  | l2"),
        ("l1\n\nl2", "l1 |  | l2"),
        ("\n", " | "),
        ("end\r", "end | "),
        ("a\nb\rc\r\nd", "a | b | c | d"),
    ] {
        let f = Fields {
            message: msg,
            ..basic()
        };
        let line = text_line(&f);
        assert_eq!(
            line,
            cols(TS, "host1", "app", "INFO", "main.py", "run", "42") + want + "\n",
            "message {msg:?}"
        );
        assert_eq!(line.matches('\n').count(), 1);
        assert!(!line.contains('\r'));
    }
}

#[test]
fn newlines_in_columns_and_metadata_are_written_as_bars() {
    let f = Fields {
        timestamp: "t\nx",
        hostname: "h\r\nx",
        logger_name: "l\rx",
        filename: "f\nx",
        function_name: "fn\r\nx",
        line_number: "1\n2",
        message: "m1\r\nm2",
        module: "mo\nd",
        stack_trace: "s1\ns2\r\ns3\rs4",
        ..basic()
    };
    let line = text_line(&f);
    assert_eq!(
        line,
        cols("t | x", "h | x", "l | x", "INFO", "f | x", "fn | x", "1 | 2")
            + "m1 | m2 [metadata: mod=mo | d stack=s1 | s2 | s3 | s4]\n"
    );
    assert_eq!(line.matches('\n').count(), 1);
    assert!(line.ends_with('\n'));
    assert!(!line.contains('\r'));
}

#[test]
fn line_break_escape_counts_toward_column_width() {
    // "abcdefghij" (10) + " | " (3) would be 13 > 12: the break is dropped.
    let f = Fields {
        hostname: "abcdefghij\nk",
        ..basic()
    };
    assert_eq!(
        text_line(&f),
        cols(TS, "abcdefghij", "app", "INFO", "main.py", "run", "42") + "hello\n"
    );
    let f = Fields {
        hostname: "abcdefghi\nk",
        ..basic()
    };
    assert_eq!(
        text_line(&f),
        cols(TS, "abcdefghi | ", "app", "INFO", "main.py", "run", "42") + "hello\n"
    );
}

#[test]
fn control_characters_are_escaped() {
    let msg = "a\x1bb\0c\x7fd\u{85}e\u{2028}f\u{2029}g\th\x01i\x1fj\x0bk\x0cl\u{9f}m\u{80}n";
    let f = Fields {
        message: msg,
        ..basic()
    };
    assert_eq!(
        text_line(&f),
        cols(TS, "host1", "app", "INFO", "main.py", "run", "42")
            + r"a\x1bb\x00c\x7fd\u{85}e\u{2028}f\u{2029}g"
            + "\th"
            + r"\x01i\x1fj\x0bk\x0cl\u{9f}m\u{80}n"
            + "\n"
    );
}

#[test]
fn escape_codes_for_single_characters() {
    for (c, want) in [
        ('\0', r"\x00"),
        ('\x1b', r"\x1b"),
        ('\x7f', r"\x7f"),
        ('\u{85}', r"\u{85}"),
        ('\u{2028}', r"\u{2028}"),
        ('\u{2029}', r"\u{2029}"),
    ] {
        let mut out = Vec::new();
        let n = escape_text(
            &mut unbounded(&mut out),
            c.to_string().as_bytes(),
            usize::MAX,
            false,
        )
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), want, "char {c:?}");
        assert_eq!(n, want.len());
    }
    // Tab and ordinary non-ASCII characters are kept as they are.
    let mut out = Vec::new();
    assert_eq!(
        escape_text(
            &mut unbounded(&mut out),
            "\té日😀".as_bytes(),
            usize::MAX,
            false
        ),
        Some(4)
    );
    assert_eq!(out, "\té日😀".as_bytes());
}

#[test]
fn control_characters_in_columns_and_metadata_are_escaped() {
    let f = Fields {
        timestamp: "ts\x1b",
        hostname: "h\0",
        logger_name: "l\u{2028}",
        filename: "f\x7f",
        function_name: "fn\u{85}",
        line_number: "\x1b",
        module: "m\x1b[31m",
        thread_name: "t\tn",
        ..basic()
    };
    assert_eq!(
        text_line(&f),
        cols(
            r"ts\x1b",
            r"h\x00",
            r"l\u{2028}",
            "INFO",
            r"f\x7f",
            r"fn\u{85}",
            r"\x1b"
        ) + r"hello [metadata: mod=m\x1b[31m tname=t"
            + "\tn]\n"
    );
}

#[test]
fn escape_that_does_not_fit_the_column_is_dropped_whole() {
    // 10 chars + `\x1b` (4) = 14 > 12: the escape is not split.
    let f = Fields {
        hostname: "abcdefghij\x1bk",
        ..basic()
    };
    assert_eq!(
        text_line(&f),
        cols(TS, "abcdefghij", "app", "INFO", "main.py", "run", "42") + "hello\n"
    );
    // 8 chars + `\x1b` = 12 fits exactly.
    let f = Fields {
        hostname: "abcdefgh\x1bk",
        ..basic()
    };
    assert_eq!(
        text_line(&f),
        cols(TS, r"abcdefgh\x1b", "app", "INFO", "main.py", "run", "42") + "hello\n"
    );
}

// ---------------------------------------------------------------- levels

#[test]
fn known_levels_are_upper_case_names() {
    let names = [
        "NOTSET", "DEBUG", "STREAM", "INFO", "LOGON", "LOGOUT", "TRADE", "SCHEDULE", "REPORT",
        "WARNING", "ERROR", "CRITICAL",
    ];
    for (i, name) in names.iter().enumerate() {
        let f = Fields {
            level: Level(i as i32),
            ..basic()
        };
        assert_eq!(
            text_line(&f),
            cols(TS, "host1", "app", name, "main.py", "run", "42") + "hello\n"
        );
    }
}

#[test]
fn unknown_level_is_written_as_level_n() {
    let f = Fields {
        level: Level(42),
        ..basic()
    };
    let line = text_line(&f);
    assert_eq!(
        line,
        cols(TS, "host1", "app", "LEVEL(42)", "main.py", "run", "42") + "hello\n"
    );
    assert!(line.contains(" LEVEL(42)  main.py "));

    // Longer than the column: not cut, followed by the separator.
    let f = Fields {
        level: Level(65535),
        ..basic()
    };
    let line = text_line(&f);
    assert!(
        line.contains("app                    LEVEL(65535) main.py "),
        "{line:?}"
    );
    assert_eq!(
        line,
        format!(
            "{}LEVEL(65535) {}hello\n",
            &cols(TS, "host1", "app", "", "", "", "")[..70],
            &cols(TS, "host1", "app", "INFO", "main.py", "run", "42")[81..]
        )
    );

    let f = Fields {
        level: Level(-1),
        ..basic()
    };
    assert_eq!(
        text_line(&f),
        cols(TS, "host1", "app", "LEVEL(-1)", "main.py", "run", "42") + "hello\n"
    );
    let f = Fields {
        level: Level(12),
        ..basic()
    };
    assert_eq!(
        text_line(&f),
        cols(TS, "host1", "app", "LEVEL(12)", "main.py", "run", "42") + "hello\n"
    );
}

// ---------------------------------------------------------------- JSON

#[test]
fn json_line_of_a_simple_record() {
    let received = at(1_795_502_173, 123_456_000);
    assert_eq!(
        json_line(&basic(), 7, &received),
        concat!(
            r#"{"seq":7,"received_at":"2026-11-24T06:36:13.123456Z","#,
            r#""timestamp":"2026-01-02T15:04:05.000000000Z","hostname":"host1","logger_name":"app","#,
            r#""module":"","level":"INFO","filename":"main.py","function_name":"run","line_number":"42","#,
            r#""message":"hello","path_name":"","process_id":"","process_name":"","thread_id":"","#,
            r#""thread_name":"","service_name":"","stack_trace":""}"#,
            "\n"
        )
    );
    // Through the formatter, with a large sequence number.
    let fmt = LineFormatter::new(LineFormat::Json, 10 * 1024 * 1024);
    let mut out = Vec::new();
    assert!(!fmt.write(&basic(), u64::MAX, &received, &mut out));
    let line = String::from_utf8(out).unwrap();
    assert!(line.starts_with(
        r#"{"seq":18446744073709551615,"received_at":"2026-11-24T06:36:13.123456Z","timestamp":"#
    ));
    assert_eq!(line, json_line(&basic(), u64::MAX, &received));
}

#[test]
fn json_line_with_every_field_and_unknown_level() {
    let f = Fields {
        timestamp: "ts",
        hostname: "h",
        logger_name: "l",
        module: "mo",
        level: Level(42),
        filename: "f",
        function_name: "fn",
        line_number: "1",
        message: "m",
        path_name: "p",
        process_id: "pid",
        process_name: "pn",
        thread_id: "tid",
        thread_name: "tn",
        service_name: "s",
        stack_trace: "st",
        attributes: "",
    };
    assert_eq!(
        json_line(&f, 0, &at(0, 0)),
        concat!(
            r#"{"seq":0,"received_at":"1970-01-01T00:00:00.000000Z","timestamp":"ts","hostname":"h","#,
            r#""logger_name":"l","module":"mo","level":"LEVEL(42)","filename":"f","function_name":"fn","#,
            r#""line_number":"1","message":"m","path_name":"p","process_id":"pid","process_name":"pn","#,
            r#""thread_id":"tid","thread_name":"tn","service_name":"s","stack_trace":"st"}"#,
            "\n"
        )
    );
}

#[test]
fn json_string_escapes() {
    let f = Fields {
        message: "a\"b\\c\nd\te\x01f\u{2028}g\rh\u{2029}i\x1fj é 日本 😀",
        hostname: "q\"",
        stack_trace: "line1\nline2",
        ..basic()
    };
    let line = json_line(&f, 1, &at(0, 0));
    assert!(line.contains(r#","hostname":"q\"","#), "{line}");
    assert!(
        line.contains(r#","message":"a\"b\\c\nd\te\u0001f\u2028g\rh\u2029i\u001fj é 日本 😀","#),
        "{line}"
    );
    assert!(line.ends_with("\"stack_trace\":\"line1\\nline2\"}\n"));
    assert_eq!(line.matches('\n').count(), 1);
    assert!(!line.contains('\r'));
    assert!(!line.contains('\u{2028}'));
}

#[test]
fn json_escape_of_single_values() {
    for (s, want) in [
        ("\"", r#"\""#),
        ("\\", r"\\"),
        ("\n", r"\n"),
        ("\r", r"\r"),
        ("\t", r"\t"),
        ("\0", r"\u0000"),
        ("\x01", r"\u0001"),
        ("\x1b", r"\u001b"),
        ("\u{2028}", r"\u2028"),
        ("\u{2029}", r"\u2029"),
        ("é", "é"),
        ("plain", "plain"),
    ] {
        let mut out = Vec::new();
        escape_json(&mut unbounded(&mut out), s.as_bytes(), usize::MAX).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), want, "value {s:?}");
    }
}

// ---------------------------------------------------------------- time

#[test]
fn received_at_of_known_instants() {
    assert_eq!(
        ReceivedAt::new(UNIX_EPOCH).as_str(),
        "1970-01-01T00:00:00.000000Z"
    );
    // 2024-01-01 is day 54 * 365 + 13 = 19723; Feb 29 is 59 days later.
    assert_eq!((19_723 + 59) * 86_400 + 86_399, 1_709_251_199);
    assert_eq!(
        at(1_709_251_199, 999_999_000).as_str(),
        "2024-02-29T23:59:59.999999Z"
    );
    assert_eq!(at(1_709_251_200, 0).as_str(), "2024-03-01T00:00:00.000000Z");
    // 2026-01-01 is day 56 * 365 + 14 = 20454; Nov 24 is day 327 of 2026.
    assert_eq!(
        (20_454 + 327) * 86_400 + 6 * 3600 + 36 * 60 + 13,
        1_795_502_173
    );
    assert_eq!(
        at(1_795_502_173, 123_456_000).as_str(),
        "2026-11-24T06:36:13.123456Z"
    );
    assert_eq!(at(951_782_400, 0).as_str(), "2000-02-29T00:00:00.000000Z");
    assert_eq!(
        at(4_107_542_399, 1_000).as_str(),
        "2100-02-28T23:59:59.000001Z"
    );
    assert_eq!(at(4_107_542_400, 0).as_str(), "2100-03-01T00:00:00.000000Z");
    // Sub-microsecond digits are dropped, not rounded.
    assert_eq!(at(0, 999_999_999).as_str(), "1970-01-01T00:00:00.999999Z");
    // Before the epoch: clamped to it.
    assert_eq!(
        ReceivedAt::new(UNIX_EPOCH - Duration::from_secs(10)).as_str(),
        "1970-01-01T00:00:00.000000Z"
    );
    assert_eq!(ReceivedAt::new(SystemTime::now()).as_str().len(), 27);
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

#[test]
fn civil_from_days_matches_day_by_day_counting() {
    let (mut y, mut m, mut d) = (1970i64, 1u32, 1u32);
    for day in 0..=80_000i64 {
        assert_eq!(civil_from_days(day), (y, m, d), "day {day}");
        d += 1;
        if d > days_in_month(y, m) {
            d = 1;
            m += 1;
            if m > 12 {
                m = 1;
                y += 1;
            }
        }
    }
    assert_eq!((y, m, d), civil_from_days(80_001));
    // Counting backwards from the epoch.
    let (mut y, mut m, mut d) = (1969i64, 12u32, 31u32);
    for day in (-80_000..=-1i64).rev() {
        assert_eq!(civil_from_days(day), (y, m, d), "day {day}");
        d -= 1;
        if d == 0 {
            if m == 1 {
                m = 12;
                y -= 1;
            } else {
                m -= 1;
            }
            d = days_in_month(y, m);
        }
    }
}

// ---------------------------------------------------------------- line cap

fn check_capped(format: LineFormat, max_line: usize, f: &Fields<'_>) -> String {
    let fmt = LineFormatter::new(format, max_line);
    let max_line = max_line.max(2 * LINE_OVERHEAD);
    let mut out = b"kept\n".to_vec();
    assert!(
        fmt.write(f, 9, &at(1_795_502_173, 0), &mut out),
        "{format:?}: the line must be cut"
    );
    assert!(out.starts_with(b"kept\n"));
    let line = String::from_utf8(out[5..].to_vec()).expect("a cut line is valid UTF-8");
    assert!(
        line.len() <= max_line,
        "{format:?}: {} bytes > {max_line}",
        line.len()
    );
    assert!(line.ends_with('\n'));
    assert_eq!(line.matches('\n').count(), 1, "{format:?}: {line:?}");
    assert!(line.contains(TRUNCATED_MARK), "{format:?}: {line:?}");
    if format == LineFormat::Json {
        assert!(
            line.starts_with("{\"seq\":9,\"received_at\":\"2026-11-24T06:36:13.000000Z\""),
            "{line:?}"
        );
        assert!(line.ends_with("\"}\n"), "{line:?}");
    }
    line
}

#[test]
fn huge_message_is_cut_to_the_line_limit() {
    let msg = "x".repeat(100_000);
    let f = Fields {
        message: &msg,
        ..basic()
    };
    let text = check_capped(LineFormat::Text, 4096, &f);
    assert!(
        text.starts_with(&cols(TS, "host1", "app", "INFO", "main.py", "run", "42")),
        "{text:?}"
    );
    assert!(text.ends_with(&format!("x{TRUNCATED_MARK}\n")), "{text:?}");
    let json = check_capped(LineFormat::Json, 4096, &f);
    assert!(
        json.contains(&format!("x{TRUNCATED_MARK}\",\"path_name\":\"\"")),
        "{json:?}"
    );
}

#[test]
fn escape_expansion_is_cut_to_the_line_limit() {
    let msg = "\x1b".repeat(50_000);
    let f = Fields {
        message: &msg,
        ..basic()
    };
    let text = check_capped(LineFormat::Text, 4096, &f);
    assert!(text.contains(&format!("\\x1b{TRUNCATED_MARK}")), "{text:?}");
    assert!(!text.contains('\x1b'));
    let json = check_capped(LineFormat::Json, 4096, &f);
    assert!(
        json.contains(&format!("\\u001b{TRUNCATED_MARK}")),
        "{json:?}"
    );
}

#[test]
fn every_field_huge_is_cut_to_the_line_limit() {
    for unit in ["\x1b", "\u{2028}", "😀", "\r\n", "\"", "\x01"] {
        let big = unit.repeat(60_000);
        let f = Fields::from_texts([big.as_str(); TEXT_FIELDS], Level(65535));
        for format in [LineFormat::Text, LineFormat::Json] {
            for max_line in [4096, 10_000, 1 << 16] {
                check_capped(format, max_line, &f);
            }
        }
    }
}

#[test]
fn line_just_over_the_limit_is_cut_and_under_is_not() {
    let fmt = LineFormatter::new(LineFormat::Text, 4096);
    let base = text_line(&basic()).len() - "hello\n".len();
    let fits = "y".repeat(4096 - base - 1);
    let f = Fields {
        message: &fits,
        ..basic()
    };
    let mut out = Vec::new();
    assert!(!fmt.write(&f, 0, &at(0, 0), &mut out));
    assert_eq!(out.len(), 4096);
    let over = "y".repeat(4096 - base);
    let f = Fields {
        message: &over,
        ..basic()
    };
    let mut out = Vec::new();
    assert!(fmt.write(&f, 0, &at(0, 0), &mut out));
    assert!(out.len() <= 4096);
    assert!(out.ends_with(format!("{TRUNCATED_MARK}\n").as_bytes()));
}

#[test]
fn normal_line_is_not_cut() {
    for format in [LineFormat::Text, LineFormat::Json] {
        let fmt = LineFormatter::new(format, 4096);
        let mut out = Vec::new();
        assert!(!fmt.write(&basic(), 3, &at(0, 0), &mut out));
        let line = String::from_utf8(out).unwrap();
        assert!(!line.contains(TRUNCATED_MARK));
        let expected = match format {
            LineFormat::Text => text_line(&basic()),
            LineFormat::Json => json_line(&basic(), 3, &at(0, 0)),
        };
        assert_eq!(line, expected);
    }
}

/// At the smallest accepted limit (`2 * LINE_OVERHEAD`, which `new` clamps
/// to) a cut field must still say it was cut.
#[test]
fn cut_line_at_the_smallest_limit_still_carries_the_mark() {
    let msg = "x".repeat(100_000);
    let f = Fields {
        message: &msg,
        ..basic()
    };
    for format in [LineFormat::Text, LineFormat::Json] {
        check_capped(format, 0, &f);
        check_capped(format, 2 * LINE_OVERHEAD, &f);
    }
}

#[test]
fn raw_fields_with_invalid_utf8_are_written_with_replacement_characters() {
    let raw = RawFields {
        timestamp: b"2026-01-02T15:04:05Z",
        hostname: b"h\xffst",
        message: b"ab\xffcd\xe2\x82",
        stack_trace: b"\xc3",
        level: Level(3),
        ..RawFields::default()
    };
    let at = ReceivedAt::new(std::time::UNIX_EPOCH);
    let mut out = Vec::new();
    LineFormatter::new(LineFormat::Text, 1 << 20).write_raw(&raw, 0, &at, &mut out);
    let line = String::from_utf8(out).expect("valid UTF-8 out of invalid input");
    assert!(line.contains(" h\u{FFFD}st        "), "{line}");
    assert!(
        line.contains(" ab\u{FFFD}cd\u{FFFD} [metadata: stack=\u{FFFD}]\n"),
        "{line}"
    );
    let mut out = Vec::new();
    LineFormatter::new(LineFormat::Json, 1 << 20).write_raw(&raw, 0, &at, &mut out);
    let line = String::from_utf8(out).unwrap();
    assert!(
        line.contains(
            r#""message":"ab\u{FFFD}cd\u{FFFD}""#.replace(r"\u{FFFD}", "\u{FFFD}").as_str()
        ),
        "{line}"
    );
}

// ------------------------------------------- amplification (issue 9, point 1)

/// Bytes the escaping loops examined on this thread while running `f`.
fn examined_by(f: impl FnOnce()) -> usize {
    let before = EXAMINED.with(|e| e.get());
    f();
    EXAMINED.with(|e| e.get()) - before
}

/// The formatting half of the bomb of issue 9: every field the same 4 MiB
/// (zero bytes, which escape to 4 bytes each, or bytes that are not UTF-8).
/// Before, the whole line was escaped first (160 MiB of `\x00`) and only
/// then cut; now escaping stops at the line limit, so memory and work are
/// a small multiple of the limit, whatever the fields hold.
#[test]
fn huge_aliased_fields_cost_at_most_a_few_line_limits() {
    const MAX_LINE: usize = 10 * 1024 * 1024; // the default --max_file_size
    for content in [0u8, 0xff, b'\n', b'a'] {
        let huge = vec![content; 4 * 1024 * 1024];
        let raw = RawFields::from_texts([&huge[..]; TEXT_FIELDS], Level(3));
        for format in [LineFormat::Text, LineFormat::Json] {
            let fmt = LineFormatter::new(format, MAX_LINE);
            let mut out = Vec::new();
            let mut cut = false;
            let work = examined_by(|| {
                cut = fmt.write_raw(&raw, 1, &at(1_795_502_173, 0), &mut out);
            });
            let what = format!("{format:?}, bytes {content:#04x}");
            assert!(cut, "{what}: the line must be cut");
            assert!(out.len() <= MAX_LINE, "{what}: {} bytes", out.len());
            assert!(
                out.capacity() <= 2 * MAX_LINE,
                "{what}: {} bytes held to format one line",
                out.capacity()
            );
            // One pass up to the limit, then the capped pass.
            assert!(work <= 2 * MAX_LINE + 64, "{what}: {work} bytes examined");
        }
    }
}

/// A field far longer than its column or the line's cap is read only as far
/// as it is written: cutting does not cost the field's length.
#[test]
fn cutting_a_field_reads_no_further_than_the_cut() {
    let huge = vec![0u8; 1 << 20];
    let fmt = LineFormatter::new(LineFormat::Text, 8 * 1024);
    let mut raw = RawFields {
        hostname: &huge,
        ..RawFields::default()
    };
    let mut out = Vec::new();
    let work = examined_by(|| {
        fmt.write_raw(&raw, 0, &at(0, 0), &mut out);
    });
    assert!(
        work <= 64,
        "{work} bytes examined for a 12-character column"
    );
    raw = RawFields {
        message: &huge,
        ..RawFields::default()
    };
    let work = examined_by(|| {
        assert!(fmt.write_raw(&raw, 0, &at(0, 0), &mut out));
    });
    assert!(
        work <= 2 * 8 * 1024,
        "{work} bytes examined for an 8 KiB line"
    );
}

// ------------------------------ decode -> format: amplification (issue 9)

// The wire crate's decoder and this formatter together: what one frame can
// cost in work and in line length. Lives here because the wire crate does
// not know the formatter.
use log_server_wire::{
    decode::{Decoded, DecodedBatch, Decoder},
    encode::{Packing, RawLoggerMsg},
};

/// Texts for the generated messages: a few random bytes, then a run of
/// zeros (long enough, now and then, to be a few MiB unpacked from a few
/// KiB packed).
fn text_strategy() -> impl proptest::strategy::Strategy<Value = (Vec<u8>, bool)> {
    use proptest::prelude::*;
    let zeros = prop_oneof![
        8 => 0usize..300,
        2 => 300usize..70_000,
        1 => 500_000usize..3_000_000,
    ];
    (
        proptest::collection::vec(any::<u8>(), 0..40),
        zeros,
        any::<bool>(),
    )
        .prop_map(|(mut head, zeros, far)| {
            head.resize(head.len() + zeros, 0);
            (head, far)
        })
}

fn raw_message_strategy() -> impl proptest::strategy::Strategy<Value = RawLoggerMsg> {
    use proptest::prelude::*;
    (
        proptest::collection::vec(text_strategy(), 1..4),
        proptest::collection::vec(proptest::option::weighted(0.8, 0usize..4), TEXT_FIELDS),
        0u16..20,
    )
        .prop_map(|(texts, fields, level)| {
            let n = texts.len();
            RawLoggerMsg {
                level,
                texts,
                fields: std::array::from_fn(|i| fields[i].map(|t| t % n)),
            }
        })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    /// Structurally valid messages with aliased and far pointers and long
    /// zero runs, packed or not, through the whole decoder and the
    /// formatter: a message is accepted exactly when what its fields
    /// reference (aliasing counted each time) fits the traversal limit,
    /// which is the configured one or the message's own size if smaller;
    /// an accepted one comes out field for field; the work is bounded by
    /// the unpacked size; no line is longer than the maximum, nor than 4
    /// bytes per unpacked byte.
    #[test]
    fn aliased_far_and_zero_run_messages_are_charged_in_full(
        msg in raw_message_strategy(),
        packed in proptest::prelude::any::<bool>(),
    ) {
        const LIMIT: usize = 1 << 20;
        const MAX_LINE: usize = 64 * 1024;
        let payload = msg.payload(if packed { Packing::Packed } else { Packing::Unpacked });
        let unpacked_len = msg.payload(Packing::Unpacked).len();
        // What capnp charges, far pointers aside (one more word each): the
        // root pointer, the struct (one data word, a pointer per field),
        // then every text each time it is referenced.
        let referenced: usize = 2 + log_server_wire::fields::TEXT_FIELDS + msg
            .fields
            .iter()
            .flatten()
            .map(|&t| (msg.texts[t].0.len() + 1).div_ceil(8))
            .sum::<usize>();
        let far_fields = msg.fields.iter().flatten().filter(|&&t| msg.texts[t].1).count();
        let table = if msg.texts.iter().any(|t| t.1) { 16 } else { 8 };
        let segment_words = (unpacked_len - table) / 8;
        let segments_fit = unpacked_len <= LIMIT;
        let mut decoder = Decoder::new(LIMIT);
        let formatter = crate::format::LineFormatter::new(crate::format::LineFormat::Text, MAX_LINE);
        let mut line = Vec::new();
        let mut got = None;
        let result = decoder.decode_with(&payload, |raw| {
            got = Some(raw.text_len());
            formatter.write_raw(&raw, 0, &crate::format::ReceivedAt::new(std::time::UNIX_EPOCH), &mut line);
        });
        if referenced > (LIMIT / 8).min(unpacked_len / 8) {
            proptest::prop_assert!(result.is_err(), "{} words referenced, accepted", referenced);
        } else if segments_fit && referenced + far_fields <= (LIMIT / 8).min(segment_words) {
            proptest::prop_assert_eq!(result.as_ref().ok(), Some(&Decoded::Log));
        }
        if result.is_ok() {
            let mut batch = DecodedBatch::default();
            decoder.decode(&payload, &mut batch).unwrap();
            let f = batch.get(0);
            let texts = f.texts();
            for (i, field) in msg.fields.iter().enumerate() {
                let want = field.map(|t| String::from_utf8_lossy(&msg.texts[t].0).into_owned()).unwrap_or_default();
                proptest::prop_assert_eq!(texts[i], want.as_str(), "field {}", i);
            }
            proptest::prop_assert!(got.unwrap() <= unpacked_len);
        }
        proptest::prop_assert!(line.len() <= MAX_LINE, "a line of {} bytes", line.len());
        proptest::prop_assert!(line.len() <= 4 * unpacked_len + crate::format::LINE_OVERHEAD);
        // Both decodes together. Packed: each unpacks the message and hands
        // on at most its size in text. Unpacked with two segments, the
        // decoder first tries the bytes as packed (the segment count is not
        // zero), which may unpack to anything up to the size limit.
        let per_decode = if packed { 2 * unpacked_len } else { LIMIT + 4096 + unpacked_len };
        proptest::prop_assert!(decoder.bytes_touched() <= 2 * per_decode as u64);
    }
}

/// Structured fields (docs/PROTOCOL.md): a JSON object stays an object in
/// JSON lines (on one line even when the client's JSON spans several), and
/// goes in the text line's metadata as `attrs=`; anything that is not one
/// JSON object is kept as a string; nothing vanishes.
#[test]
fn attributes_are_an_object_in_json_and_metadata_in_text() {
    let with = |attributes| Fields {
        message: "m",
        attributes,
        ..Fields::default()
    };
    let json = |a| json_line(&with(a), 0, &at(0, 0));
    assert!(
        json(r#"{"user":"ada","ms":12}"#)
            .ends_with("\"stack_trace\":\"\",\"attributes\":{\"user\":\"ada\",\"ms\":12}}\n"),
        "{}",
        json(r#"{"user":"ada","ms":12}"#)
    );
    let spread = json("{\n  \"a\": [1,\n 2]\n}");
    assert!(
        spread.ends_with(",\"attributes\":{\"a\":[1,2]}}\n"),
        "{spread}"
    );
    assert_eq!(spread.matches('\n').count(), 1, "{spread}");
    for not_an_object in ["[1,2]", "\"s\"", "{\"a\":1} trailing", "{broken"] {
        let line = json(not_an_object);
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["attributes"], not_an_object, "{line}");
    }
    assert!(
        !json("").contains("attributes"),
        "no key without attributes"
    );
    let text = text_line(&with("{\"user\":\"ada\",\n\"x\":1}"));
    assert!(
        text.ends_with("[metadata: attrs={\"user\":\"ada\", | \"x\":1}]\n"),
        "{text}"
    );
}

/// The eight-bytes-a-step scan finds the same first special byte as a scan
/// byte by byte, for every byte value at every position of every length
/// around a word, in both kinds of line.
#[test]
fn the_word_scan_agrees_with_the_byte_scan() {
    for json in [false, true] {
        let slow = |bytes: &[u8]| {
            bytes.iter().position(|&b| {
                if json {
                    !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\'
                } else {
                    !((0x20..0x7f).contains(&b) || b == b'\t')
                }
            })
        };
        for len in 0..=19 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = b;
                    assert_eq!(
                        super::first_special(&bytes, json),
                        slow(&bytes),
                        "json={json} len={len} at={at} byte={b:#x}"
                    );
                }
            }
        }
        // Borrows between bytes must not hide or invent one.
        for w in [
            *b"\x00\x01\x1f\x20~\x7f\x80\xff",
            *b" !\"#[\\]~",
            *b"\t\t\t\t\t\t\t\t",
        ] {
            assert_eq!(super::first_special(&w, json), slow(&w), "{w:?}");
        }
    }
}

/// The whole-line scan of the plain text path says yes exactly when no byte
/// is special, for every byte value at every position of lengths around
/// its 32- and 8-byte steps (and the overlapping last word).
#[test]
fn the_line_scan_agrees_with_the_byte_scan() {
    for len in (0..=80).chain([95, 96, 97, 200]) {
        assert!(super::all_plain(&vec![b'a'; len]), "len={len}");
        for at in 0..len {
            for b in 0..=255u8 {
                let mut bytes = vec![b'a'; len];
                bytes[at] = b;
                assert_eq!(
                    super::all_plain(&bytes),
                    super::is_plain_ascii(b),
                    "len={len} at={at} byte={b:#x}"
                );
            }
        }
    }
}

/// Field text for the plain path's property test: mostly printable ASCII
/// of any length around the column widths, sometimes a tab, a line break, a
/// control byte, a multibyte character or a byte that is not UTF-8.
fn mostly_plain_text() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let byte = prop_oneof![
        40 => 0x20u8..0x7f,
        1 => Just(b'\t'),
        1 => Just(b'\n'),
        1 => Just(0x7fu8),
        1 => Just(0u8),
        1 => Just(0xc3u8),
        1 => Just(0xa9u8),
    ];
    prop_oneof![
        Just(Vec::new()),
        proptest::collection::vec(0x20u8..0x7f, 0..40),
        proptest::collection::vec(byte, 0..40),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// Whatever the fields, a text line comes out as the general
    /// field-by-field path writes it: the plain path either writes those
    /// same bytes or nothing.
    #[test]
    fn the_plain_text_path_writes_what_the_general_path_writes(
        texts in proptest::collection::vec(mostly_plain_text(), TEXT_FIELDS),
        level in proptest::prelude::prop_oneof![0i32..8, proptest::prelude::any::<i32>()],
        extra in proptest::option::of(mostly_plain_text()),
    ) {
        let texts: [&[u8]; TEXT_FIELDS] = std::array::from_fn(|i| &texts[i][..]);
        let raw = RawFields::from_texts(texts, Level(level));
        let extra_text = extra.map(|e| String::from_utf8_lossy(&e).into_owned());
        let extras: Vec<Extra<'_>> = extra_text
            .iter()
            .map(|t| Extra { text_key: "x", json_key: "x", value: ExtraValue::Text(t) })
            .collect();
        let mut general = Vec::new();
        write_text(&raw, &extras, usize::MAX, &mut unbounded(&mut general)).unwrap();

        let mut plain = b"before".to_vec();
        let took = write_text_plain(&raw, &extras, &mut unbounded(&mut plain));
        if took {
            proptest::prop_assert_eq!(
                String::from_utf8_lossy(&plain[6..]),
                String::from_utf8_lossy(&general)
            );
        } else {
            proptest::prop_assert_eq!(&plain[..], b"before");
        }
        // A line of plain fields is always taken by the plain path.
        let plain_text = |t: &[u8]| t.iter().all(|&b| super::is_plain_ascii(b));
        if texts.iter().all(|t| plain_text(t))
            && extra_text.iter().all(|t| plain_text(t.as_bytes()))
        {
            proptest::prop_assert!(took, "a plain line went the general way");
        }

        let mut out = Vec::new();
        let cut = LineFormatter::new(LineFormat::Text, 10 << 20)
            .write_extended(&raw, &extras, 0, &at(0, 0), &mut out);
        proptest::prop_assert!(!cut);
        proptest::prop_assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&general));
    }
}
