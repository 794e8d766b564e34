//! Forwarding: every line of the log files, again as OTLP, to a Collector (placeholder; the lead merges this file).
pub mod lines;
