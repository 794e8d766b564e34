//! OTLP/HTTP: `POST /v1/logs` on the gRPC port, over HTTP/1.1 and h2c,
//! what OpenTelemetry's `http/protobuf` and `http/json` log exporters send
//! (<https://opentelemetry.io/docs/specs/otlp/#otlphttp>).
//!
//! The body (`application/x-protobuf` or `application/json`, gzip or not)
//! -> the bytes of an `ExportLogsServiceRequest` (as they came, or from
//! [`log_server_wire::otlp::json`]) -> `super::export`, the same path as
//! OTLP/gRPC from there: taken whole or refused before anything is taken,
//! answered per `--grpc_ack`, counted in `otlp_records`.
//!
//! The gRPC server's layers wrap this route too: the request-bytes memory
//! budget charges the body as it is read (and ends a body silent in the
//! middle for `--grpc_message_timeout`); the decoder size limit of
//! `MessageLimitLayer` does not reach a plain HTTP body, so the body and
//! its gunzipped size are bounded by `--max_frame_size` here.
//!
//! Answers, as the spec says: 200 with an `ExportLogsServiceResponse` in
//! the request's content type; 400 for a body that does not decode, 413
//! above the size limit, 415 for another content type or encoding, 405 for
//! another method, 503 with `Retry-After` when the queue stays full (or the
//! memory budget stays spent), each with a `google.rpc.Status` body.

use std::{future::poll_fn, io::Read as _, pin::Pin, sync::Arc, time::Instant};

use axum::body::Body;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use log_server_wire::{
    otlp::collector::logs::v1::ExportLogsServiceResponse, otlp::json as otlp_json,
};
use prost::Message as _;
use tonic::{Code, Status};

use super::{RawExport, Refused};
use crate::{
    format::ClientText,
    ingest::grpc::{budget::Charge, Handler},
    rpc_status::RpcStatus,
};

/// The path OTLP/HTTP exporters post logs to.
pub const LOGS_PATH: &str = "/v1/logs";

/// `Retry-After` of a 503, seconds. The queue drains in milliseconds once
/// the writer moves; one second keeps retries from hammering a stuck disk
/// while losing little time on a brief stall (exporters back off further
/// on their own).
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// The route of `POST /v1/logs`, merged into the gRPC server's router.
pub(crate) fn router(handler: Handler, max_body: usize) -> axum::Router {
    axum::Router::new().route(
        LOGS_PATH,
        // `any`, not `post`: a 405 carries a Status body like every error.
        axum::routing::any(move |request: Request<Body>| {
            let handler = handler.clone();
            async move { post_logs(&handler, max_body, request).await }
        }),
    )
}

/// A body encoding of OTLP/HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Protobuf,
    Json,
}

impl Kind {
    /// The kind named by a `Content-Type` (its parameters ignored).
    fn of(headers: &HeaderMap) -> Option<Kind> {
        let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let media = value.split(';').next().unwrap_or_default().trim();
        if media.eq_ignore_ascii_case("application/x-protobuf")
            || media.eq_ignore_ascii_case("application/protobuf")
        {
            Some(Kind::Protobuf)
        } else if media.eq_ignore_ascii_case("application/json") {
            Some(Kind::Json)
        } else {
            None
        }
    }

    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Kind::Protobuf => "application/x-protobuf",
            Kind::Json => "application/json",
        })
    }
}

/// An answer other than 200.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    code: Code,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: Code, message: impl Into<String>) -> Self {
        Refusal {
            status,
            code,
            message: message.into(),
        }
    }

    fn too_large(max: usize) -> Self {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::ResourceExhausted,
            format!("the request body exceeds the maximum of {max} bytes (--max_frame_size)"),
        )
    }

    /// The HTTP answer to a gRPC status from the pipeline or the layers.
    fn from_status(status: &Status) -> Self {
        let http = match status.code() {
            // The queue stayed full (nothing taken), or the memory budget
            // for requests in flight stayed spent: retryable, per the spec.
            Code::Unavailable | Code::ResourceExhausted => StatusCode::SERVICE_UNAVAILABLE,
            Code::DeadlineExceeded => StatusCode::REQUEST_TIMEOUT,
            Code::InvalidArgument => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Refusal::new(http, status.code(), status.message())
    }

    /// The answer, its body a Status in `kind` (protobuf when the request's
    /// kind is unknown, as the spec's default).
    fn into_response(self, kind: Option<Kind>) -> Response<Body> {
        let kind = kind.unwrap_or(Kind::Protobuf);
        let body = match kind {
            Kind::Protobuf => RpcStatus {
                code: self.code as i32,
                message: self.message,
                details: Vec::new(),
            }
            .encode_to_vec(),
            Kind::Json => serde_json::json!({ "code": self.code as i32, "message": self.message })
                .to_string()
                .into_bytes(),
        };
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, kind.content_type());
        match self.status {
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, RETRY_AFTER_SECONDS.into());
            }
            StatusCode::METHOD_NOT_ALLOWED => {
                headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            _ => {}
        }
        response
    }
}

/// The answer to a request no route of the gRPC port serves. A gRPC call
/// (`Content-Type: application/grpc...`) gets gRPC's UNIMPLEMENTED, as tonic
/// answers it; anything else a 404. Tonic's answer alone (HTTP 200 with a
/// `grpc-status` header) is a success to an HTTP client: an OTLP/HTTP
/// exporter posting to a wrong path (`OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`
/// without `/v1/logs`) would drop its records believing them delivered.
pub(crate) async fn fallback(request: Request<Body>) -> Response<Body> {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        let (parts, ()) = Status::unimplemented("").into_http::<()>().into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    // The path is not echoed: it is the client's text.
    Refusal::new(
        StatusCode::NOT_FOUND,
        Code::NotFound,
        format!("nothing is served at this path; OTLP/HTTP logs go to POST {LOGS_PATH}"),
    )
    .into_response(Kind::of(request.headers()))
}

/// Serves one `POST /v1/logs`.
async fn post_logs(handler: &Handler, max_body: usize, request: Request<Body>) -> Response<Body> {
    let received = Instant::now();
    let kind = Kind::of(request.headers());
    match take(handler, max_body, kind, request, received).await {
        Ok(response) => {
            // `kind` is known: `take` refuses a request without one.
            let kind = kind.unwrap_or(Kind::Protobuf);
            let body = match kind {
                Kind::Protobuf => response.encode_to_vec(),
                Kind::Json => response_json(&response).into_bytes(),
            };
            let mut answer = Response::new(Body::from(body));
            answer
                .headers_mut()
                .insert(header::CONTENT_TYPE, kind.content_type());
            answer
        }
        Err(refusal) => {
            if refusal.status == StatusCode::BAD_REQUEST {
                tracing::debug!(reason = %ClientText(&refusal.message), "An OTLP/HTTP request was refused.");
            }
            refusal.into_response(kind)
        }
    }
}

/// Checks, reads and decodes the request, then exports it.
async fn take(
    handler: &Handler,
    max_body: usize,
    kind: Option<Kind>,
    request: Request<Body>,
    received: Instant,
) -> Result<ExportLogsServiceResponse, Refusal> {
    if request.method() != Method::POST {
        return Err(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            Code::Unimplemented,
            format!("{LOGS_PATH} takes POST only"),
        ));
    }
    let Some(kind) = kind else {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::InvalidArgument,
            "the Content-Type must be application/x-protobuf or application/json",
        ));
    };
    let gzip = match request.headers().get(header::CONTENT_ENCODING) {
        None => false,
        Some(v) if v.as_bytes().eq_ignore_ascii_case(b"identity") => false,
        Some(v) if v.as_bytes().eq_ignore_ascii_case(b"gzip") => true,
        Some(_) => {
            return Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Code::InvalidArgument,
                "the Content-Encoding must be gzip or none",
            ))
        }
    };
    // Refused before a byte of the body is read.
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max_body as u64) {
        return Err(Refusal::too_large(max_body));
    }
    // The body's bytes stay charged to the memory budget until its records
    // are formatted, as for gRPC.
    let charge = request.extensions().get::<Arc<Charge>>().cloned();
    let body = read_body(request.into_body(), max_body, announced).await?;
    let body = if gzip {
        let mut out = Vec::new();
        gunzip(&body, max_body, &mut out)?;
        out
    } else {
        body
    };
    let raw = match kind {
        // Read in place by the same view as an OTLP/gRPC request.
        Kind::Protobuf => RawExport(body.into()),
        Kind::Json => {
            let decoded = otlp_json::decode_request(&body).map_err(|e| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    Code::InvalidArgument,
                    e.to_string(),
                )
            })?;
            drop(body);
            RawExport::from(&decoded)
        }
    };
    super::export(handler, raw, charge, received)
        .await
        .map_err(|refused| match refused {
            Refused::Invalid(_) => Refusal::new(
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
                refused.to_string(),
            ),
            Refused::TooManyRecords { .. } => Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                Code::ResourceExhausted,
                refused.to_string(),
            ),
            Refused::Pipeline(status) => Refusal::from_status(&status),
        })
}

/// Reads the whole body, at most `max` bytes.
async fn read_body(mut body: Body, max: usize, announced: Option<u64>) -> Result<Vec<u8>, Refusal> {
    let first = announced.map_or(0, |n| usize::try_from(n).unwrap_or(max).min(max));
    let mut out = Vec::with_capacity(first);
    while let Some(frame) = poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx)).await
    {
        let frame = frame.map_err(body_error)?;
        if let Ok(data) = frame.into_data() {
            if data.len() > max - out.len() {
                return Err(Refusal::too_large(max));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// The answer to a body that failed while being read: the memory budget's
/// and idle timeout's statuses as theirs, anything else (the client went
/// away, a malformed chunk) as a bad request.
fn body_error(error: axum::Error) -> Refusal {
    let error = error.into_inner();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&*error);
    while let Some(e) = source {
        if let Some(status) = e.downcast_ref::<Status>() {
            return Refusal::from_status(status);
        }
        source = e.source();
    }
    Refusal::new(
        StatusCode::BAD_REQUEST,
        Code::InvalidArgument,
        format!("the request body could not be read: {error}"),
    )
}

/// Gunzips `body` (one or more gzip members) into `out`, refusing it
/// (413) as soon as it would exceed `max` bytes: `out` never holds more
/// than `max + 1` bytes of capacity, however much the body would expand.
fn gunzip(body: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), Refusal> {
    // One byte past the limit proves the body is too large.
    let cap = max.saturating_add(1);
    let mut decoder = flate2::read::MultiGzDecoder::new(body);
    out.clear();
    // Typical log batches shrink 5-10x; start there and double.
    let mut len = 0;
    let first = body.len().saturating_mul(8).clamp(4096, cap);
    out.reserve_exact(first);
    out.resize(first, 0);
    loop {
        if len == out.len() {
            if len >= cap {
                out.truncate(0);
                return Err(Refusal::too_large(max));
            }
            let grown = len.saturating_mul(2).min(cap);
            out.reserve_exact(grown - len);
            out.resize(grown, 0);
        }
        match decoder.read(&mut out[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    Code::InvalidArgument,
                    format!("the gzip body does not decompress: {e}"),
                ))
            }
        }
    }
    out.truncate(len);
    Ok(())
}

/// `ExportLogsServiceResponse` in OTLP/JSON: `{}`, or `partialSuccess`
/// with the fields that are not at their defaults (proto3 JSON leaves
/// those out; int64 as a string).
fn response_json(response: &ExportLogsServiceResponse) -> String {
    let Some(partial) = &response.partial_success else {
        return "{}".into();
    };
    let mut fields = serde_json::Map::new();
    if partial.rejected_log_records != 0 {
        fields.insert(
            "rejectedLogRecords".into(),
            partial.rejected_log_records.to_string().into(),
        );
    }
    if !partial.error_message.is_empty() {
        fields.insert("errorMessage".into(), partial.error_message.clone().into());
    }
    serde_json::json!({ "partialSuccess": fields }).to_string()
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use flate2::{write::GzEncoder, Compression};

    use super::*;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// A gzip bomb (many members of a MiB of zeros each: 64 MiB from a few
    /// tens of KiB) is refused with 413 having held no more than the limit
    /// plus one byte; a body of exactly the limit passes, and concatenated
    /// members decode as one body.
    #[test]
    fn gunzip_is_bounded_by_the_limit() {
        let max = 256 * 1024;
        let member = gz(&vec![0u8; 1 << 20]);
        let bomb = member.repeat(64);
        let mut out = Vec::new();
        let refused = gunzip(&bomb, max, &mut out).unwrap_err();
        assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(out.capacity() <= max + 1, "{} bytes held", out.capacity());

        let exact = [gz(&vec![7u8; max - 10]), gz(&[8u8; 10])].concat();
        gunzip(&exact, max, &mut out).unwrap();
        assert_eq!(out.len(), max);
        assert_eq!(&out[max - 11..max - 9], [7, 8]);
        assert!(out.capacity() <= max + 1, "{} bytes held", out.capacity());

        let over = gz(&vec![7u8; max + 1]);
        assert!(gunzip(&over, max, &mut out).is_err());

        let corrupt = &gz(b"hello")[..10];
        let refused = gunzip(corrupt, max, &mut out).unwrap_err();
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        gunzip(&gz(b""), max, &mut out).unwrap();
        assert!(out.is_empty());
    }

    /// The JSON response is proto3 JSON: `{}` without partial success, the
    /// warning's non-default fields (int64 as a string) with it.
    #[test]
    fn the_json_response_is_proto3_json() {
        use log_server_wire::otlp::collector::logs::v1::ExportLogsPartialSuccess;
        assert_eq!(response_json(&ExportLogsServiceResponse::default()), "{}");
        let warning = |rejected, message: &str| ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: rejected,
                error_message: message.into(),
            }),
        };
        assert_eq!(
            response_json(&warning(0, "2 \"cut\"")),
            r#"{"partialSuccess":{"errorMessage":"2 \"cut\""}}"#
        );
        assert_eq!(
            response_json(&warning(3, "")),
            r#"{"partialSuccess":{"rejectedLogRecords":"3"}}"#
        );
    }

    #[test]
    fn content_types_are_matched_without_parameters_or_case() {
        let kind = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
            Kind::of(&h)
        };
        assert_eq!(kind("application/x-protobuf"), Some(Kind::Protobuf));
        assert_eq!(kind("Application/JSON; charset=utf-8"), Some(Kind::Json));
        assert_eq!(kind("text/plain"), None);
        assert_eq!(kind("application/jsonx"), None);
        assert_eq!(Kind::of(&HeaderMap::new()), None);
    }
}
