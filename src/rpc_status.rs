//! `google.rpc.Status` and `google.rpc.RetryInfo`: the error details gRPC
//! carries in `grpc-status-details-bin` and the body of an OTLP/HTTP error.
//!
//! Beside the pipeline, shared by both ends of OTLP: ingest answers with
//! them (`ingest::otlp::http`, `ingest::grpc::budget`), the forwarder reads
//! them (`forward::export`). Declared here with prost rather than pulled in
//! from a googleapis crate: four small messages.

use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use tonic::{Code, Status};

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`, the element type of `Status.details`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoAny {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`: when to try again.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// The type URL of RetryInfo in an Any.
pub const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// A gRPC status that says when to retry: OTLP clients retry
/// `RESOURCE_EXHAUSTED` only when it carries RetryInfo (otherwise they take
/// the request for too large, or drop it).
pub fn retry_after(code: Code, message: String, delay: Duration) -> Status {
    let details = RpcStatus {
        code: code as i32,
        message: message.clone(),
        details: vec![ProtoAny {
            type_url: RETRY_INFO_TYPE.into(),
            value: RetryInfo {
                retry_delay: Some(ProtoDuration {
                    seconds: i64::try_from(delay.as_secs()).unwrap_or(i64::MAX),
                    nanos: delay.subsec_nanos() as i32,
                }),
            }
            .encode_to_vec(),
        }],
    };
    Status::with_details(code, message, Bytes::from(details.encode_to_vec()))
}

/// The delay of the RetryInfo among a status's details, if any (a delay
/// that is negative or absent counts as none given).
pub fn retry_delay(details: &[u8]) -> Option<Duration> {
    if details.is_empty() {
        return None;
    }
    let status = RpcStatus::decode(details).ok()?;
    status
        .details
        .iter()
        .filter(|any| any.type_url == RETRY_INFO_TYPE)
        .find_map(|any| RetryInfo::decode(any.value.as_slice()).ok())
        .map(|info| {
            let delay = info.retry_delay.unwrap_or_default();
            let seconds = u64::try_from(delay.seconds).unwrap_or(0);
            let nanos = u32::try_from(delay.nanos).unwrap_or(0).min(999_999_999);
            Duration::new(seconds, nanos)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_with_retry_info_reads_back_its_delay() {
        let s = retry_after(
            Code::ResourceExhausted,
            "busy".into(),
            Duration::from_millis(1500),
        );
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(retry_delay(s.details()), Some(Duration::from_millis(1500)));
        assert_eq!(retry_delay(&[]), None);
        assert_eq!(retry_delay(b"\xff\xff"), None);
    }

    /// The error body is a google.rpc.Status: code 1, message 2.
    #[test]
    fn the_status_is_google_rpc_status_on_the_wire() {
        let status = RpcStatus {
            code: 3,
            message: "bad".into(),
            details: Vec::new(),
        };
        assert_eq!(status.encode_to_vec(), b"\x08\x03\x12\x03bad");
    }
}
