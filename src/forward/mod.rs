//! The forwarder: follows the log files and sends every line to an OpenTelemetry Collector over OTLP.

pub mod export;
