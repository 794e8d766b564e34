//! OTLP logs ingest: what every OpenTelemetry SDK's log exporter sends,
//! served on the gRPC port beside `LogBridge` (docs/PROTOCOL.md, "OTLP
//! logs").
//!
//! The bytes of an `ExportLogsServiceRequest` (OTLP/gRPC's codec hands
//! them over as they came, [`http`] gives a protobuf body as it is and a
//! JSON one encoded) -> the wire crate's zero-copy view (checked whole
//! first) -> [`map`] (each record's fields and extras) -> [`Ingress`]
//! (sequence numbers, lines) -> queue, through the same gRPC `Handler` as
//! `LogMessage`: the same wait for room before anything is taken, the same
//! `--grpc_ack`. A request is taken whole or not at all: when the queue
//! stays full the answer is UNAVAILABLE (HTTP 503 with `Retry-After`), which
//! OTLP exporters retry, so no record is ever rejected for good; the
//! response's `partial_success` only carries warnings (records cut to fit
//! a file).

pub mod http;
pub mod map;
mod service;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use log_server_wire::otlp::{
    collector::logs::v1::{
        ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
    },
    view::{ExportRequestView, ViewError},
};
use prost::Message as _;
use thiserror::Error;
use tonic::{codec::DecodeBuf, Status};

use self::map::{RecordLine, ResourceColumns, ScopeColumns};
use super::{
    grpc::{codec::FromRequestBytes, Handler},
    ingress::Ingress,
};
use crate::{
    format::{LineFormatter, ReceivedAt},
    record::Record,
};

/// Wire bytes each log record of a request is charged at least, so that a
/// request holds at most `--max_frame_size / 32` records (131,072 at the
/// default). An empty record is 2 bytes on the wire but at least ~130 bytes
/// of line: without this, a 4 MiB request of empty records would become
/// 270 MB of lines. Real records are 100 bytes and more; SDKs send 512 a
/// request, collectors a few thousand.
pub const MIN_RECORD_BYTES: usize = 32;

/// An `ExportLogsServiceRequest` as it came off the wire, read later with
/// [`ExportRequestView`] (the gRPC codec hands the handler these bytes).
#[derive(Debug, Clone, Default)]
pub struct RawExport(pub Bytes);

impl FromRequestBytes for RawExport {
    fn from_request_bytes(buf: &mut DecodeBuf<'_>) -> Result<Self, Status> {
        let len = bytes::Buf::remaining(buf);
        Ok(RawExport(bytes::Buf::copy_to_bytes(buf, len)))
    }
}

impl From<&ExportLogsServiceRequest> for RawExport {
    /// The request's protobuf encoding (OTLP/JSON bodies come this way).
    fn from(request: &ExportLogsServiceRequest) -> Self {
        RawExport(request.encode_to_vec().into())
    }
}

/// Why an export was refused. Nothing of it was taken.
#[derive(Debug, Error)]
pub(crate) enum Refused {
    /// The bytes are not an export request (gRPC INVALID_ARGUMENT, HTTP 400).
    #[error("not a valid OTLP ExportLogsServiceRequest: {0}")]
    Invalid(#[from] ViewError),
    /// More records than [`MIN_RECORD_BYTES`] allows (gRPC
    /// RESOURCE_EXHAUSTED, HTTP 413): retrying the same request cannot help.
    #[error("{count} log records in one request; at most {most} are accepted (one per {MIN_RECORD_BYTES} bytes of the request size limit): send smaller batches")]
    TooManyRecords { count: usize, most: usize },
    /// The pipeline's answer: UNAVAILABLE when the queue stayed full
    /// (retryable; HTTP 503).
    #[error("{}", .0.message())]
    Pipeline(Status),
}

impl From<Refused> for Status {
    fn from(refused: Refused) -> Status {
        match refused {
            Refused::Invalid(_) => Status::invalid_argument(refused.to_string()),
            Refused::TooManyRecords { .. } => Status::resource_exhausted(refused.to_string()),
            Refused::Pipeline(status) => status,
        }
    }
}

/// Takes every record of `request` into the pipeline, lets go of the
/// request (and of `charge`, its bytes in the memory budget), then waits
/// until the records are as far as `--grpc_ack` asks. Refused before
/// anything is taken: bytes that are not an export request, too many
/// records, a queue that stays full.
pub(crate) async fn export<C>(
    handler: &Handler,
    request: RawExport,
    charge: C,
    received: Instant,
) -> Result<ExportLogsServiceResponse, Refused> {
    let view = ExportRequestView::parse(&request.0)?;
    let most = handler.max_message_bytes() / MIN_RECORD_BYTES;
    let count = view.record_count();
    if count > most {
        return Err(Refused::TooManyRecords { count, most });
    }
    // At most max_message_bytes / 32 (far below u32::MAX), as checked.
    let count = u32::try_from(count).unwrap_or(u32::MAX);
    let mut truncated = 0;
    let end = handler
        .accept_record(&handler.stats().otlp_records, |ingress| {
            (count > 0).then(|| sequence(ingress, view, count, received, &mut truncated))
        })
        .await
        .map_err(Refused::Pipeline)?;
    drop(request);
    drop(charge);
    handler.acknowledge(end).await;
    Ok(ExportLogsServiceResponse {
        partial_success: (truncated > 0).then(|| ExportLogsPartialSuccess {
            // Every record was taken; this is a warning, as OTLP allows.
            rejected_log_records: 0,
            error_message: format!(
                "{truncated} log records were cut to fit the largest line a log file holds"
            ),
        }),
    })
}

/// Numbers and formats the `count` records of `request` into one record, in
/// the order the request lists them.
fn sequence(
    ingress: &Ingress,
    request: ExportRequestView<'_>,
    count: u32,
    received: Instant,
    truncated: &mut usize,
) -> Record {
    let received_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let formatter = ingress.formatter();
    ingress.sequence_with(count, received, |first, at, out| {
        *truncated = write_lines(&formatter, request, first, received_ns, at, out);
        *truncated
    })
}

/// Appends the line of every record of `request` to `out`, numbered from
/// `first` (pure: what `export` does between decoding and the queue).
/// `received_ns` stands in for records without a time. Returns how many
/// lines had to be cut to fit a file.
pub fn write_lines(
    formatter: &LineFormatter,
    request: ExportRequestView<'_>,
    first: u64,
    received_ns: u64,
    at: &ReceivedAt,
    out: &mut Vec<u8>,
) -> usize {
    let mut truncated = 0;
    let mut seq = first;
    for resource_logs in request.resource_logs() {
        let resource = ResourceColumns::new(resource_logs.resource());
        for scope_logs in resource_logs.scope_logs() {
            let scope = ScopeColumns::new(scope_logs.scope());
            for record in scope_logs.log_records() {
                let line = RecordLine::new(&resource, &scope, record, received_ns);
                let (extras, n) = line.extras();
                truncated += usize::from(formatter.write_with_extras(
                    &line.fields(),
                    &extras[..n],
                    seq,
                    at,
                    out,
                ));
                seq += 1;
            }
        }
    }
    truncated
}
