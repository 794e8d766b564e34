//! OTLP logs ingest: what every OpenTelemetry SDK's log exporter sends,
//! served on the gRPC port beside `LogBridge` (docs/PROTOCOL.md, "OTLP
//! logs").
//!
//! `ExportLogsServiceRequest` (OTLP/gRPC, or `POST /v1/logs`) ->
//! [`map`] (each record's fields and extras) -> [`Ingress`] (sequence
//! numbers, lines) -> queue, through the same gRPC [`Handler`] as
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

use log_server_wire::otlp::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use tonic::Status;

use self::map::{RecordView, ResourceView, ScopeView};
use super::{grpc::Handler, ingress::Ingress};
use crate::record::Record;

/// Log records in a request.
pub fn record_count(request: &ExportLogsServiceRequest) -> usize {
    request
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum()
}

/// Takes every record of `request` into the pipeline, lets go of the
/// request (and of `charge`, its bytes in the memory budget), then waits
/// until the records are as far as `--grpc_ack` asks. UNAVAILABLE, with
/// nothing taken, when the queue stays full.
pub(crate) async fn export<C>(
    handler: &Handler,
    request: ExportLogsServiceRequest,
    charge: C,
    received: Instant,
) -> Result<ExportLogsServiceResponse, Status> {
    let count = u32::try_from(record_count(&request))
        .map_err(|_| Status::invalid_argument("more than 4 billion log records in one request"))?;
    let mut truncated = 0;
    let end = handler
        .accept_record(&handler.stats().otlp_records, |ingress| {
            (count > 0).then(|| sequence(ingress, &request, count, received, &mut truncated))
        })
        .await?;
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
    request: &ExportLogsServiceRequest,
    count: u32,
    received: Instant,
    truncated: &mut usize,
) -> Record {
    let received_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let formatter = ingress.formatter();
    ingress.sequence_with(count, received, |first, at, out| {
        let mut seq = first;
        for resource_logs in &request.resource_logs {
            let resource = ResourceView::new(resource_logs.resource.as_ref());
            for scope_logs in &resource_logs.scope_logs {
                let scope = ScopeView::new(scope_logs.scope.as_ref());
                for record in &scope_logs.log_records {
                    let view = RecordView::new(&resource, &scope, record, received_ns);
                    let (extras, n) = view.extras();
                    *truncated += usize::from(formatter.write_with_extras(
                        &view.fields(),
                        &extras[..n],
                        seq,
                        at,
                        out,
                    ));
                    seq += 1;
                }
            }
        }
        *truncated
    })
}
