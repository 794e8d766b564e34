//! The names of the files the server writes in its log directory: the
//! contract between the writer, which rotates them, and the tools that read
//! them back (loadgen's verifier, the tests).

/// Name of the active file in the log directory.
pub const ACTIVE: &str = "_main.log";

/// Name of the `i`-th rotated file, `0` being the newest.
pub fn rotated_name(i: usize) -> String {
    format!("{ACTIVE}.{i}")
}
