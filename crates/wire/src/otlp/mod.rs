//! OTLP logs (`opentelemetry.proto.*.v1`), as OpenTelemetry SDKs send them:
//! the generated messages and the tonic client of `LogsService` (for
//! clients, tests and loadgen), and [`view`], the reader the server decodes
//! requests with: it checks a request's bytes once and then reads records
//! straight out of them, with no allocation per record.

pub use crate::generated::opentelemetry::proto::{collector, common, logs, resource};

pub mod view;

pub mod json;
