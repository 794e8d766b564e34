//! The protobuf codec of the gRPC services: tonic-prost's encoder, and a
//! decoder that answers bad requests with the status codes a client can act
//! on: INVALID_ARGUMENT for a message that is not valid protobuf (invalid
//! UTF-8 in a string field, among others) where tonic-prost says INTERNAL,
//! and RESOURCE_EXHAUSTED for one above `--max_frame_size`.
//!
//! The generated service code builds its codec with `Default`, so the
//! limit cannot be passed to the decoder directly. [`MessageLimitLayer`]
//! wraps every call of a server in the limit of that server (a tokio
//! task-local, which follows the call's future to whatever thread polls
//! it), and the decoder reads it from there. A decoder outside any call's
//! scope has no limit to apply and refuses the message rather than accept
//! any size.

use std::{
    future::Future,
    marker::PhantomData,
    task::{Context, Poll},
};

use prost::Message;
use tokio::task::futures::TaskLocalFuture;
use tonic::{
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
    Status,
};
use tonic_prost::{ProstCodec, ProstEncoder};

tokio::task_local! {
    /// Largest request accepted, bytes, for the call being served.
    static MAX_MESSAGE_BYTES: usize;
}

/// Runs every call of the service it wraps with `max` as the largest
/// request its decoder accepts (`--max_frame_size`).
#[derive(Debug, Clone, Copy)]
pub struct MessageLimitLayer(pub usize);

impl<S> tower_layer::Layer<S> for MessageLimitLayer {
    type Service = MessageLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MessageLimit { inner, max: self.0 }
    }
}

/// [`MessageLimitLayer`]'s service.
#[derive(Debug, Clone)]
pub struct MessageLimit<S> {
    inner: S,
    max: usize,
}

impl<S, R> tower_service::Service<R> for MessageLimit<S>
where
    S: tower_service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TaskLocalFuture<usize, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        MAX_MESSAGE_BYTES.scope(self.max, self.inner.call(request))
    }
}

/// Runs `future` as [`MessageLimitLayer`] runs a call: with `max` as the
/// largest message its decoder accepts.
pub fn with_message_limit<F: Future>(max: usize, future: F) -> TaskLocalFuture<usize, F> {
    MAX_MESSAGE_BYTES.scope(max, future)
}

/// Whether a message of `len` bytes may be decoded in the current call.
fn check_len(len: usize) -> Result<(), Status> {
    let Ok(max) = MAX_MESSAGE_BYTES.try_with(|max| *max) else {
        // Only a bug gets here (a decoder used outside MessageLimitLayer):
        // refuse rather than accept a message of any size.
        return Err(Status::internal(
            "the server has no message size limit for this call; the message is refused",
        ));
    };
    if len > max {
        return Err(Status::resource_exhausted(format!(
            "message of {len} bytes exceeds the maximum of {max} bytes"
        )));
    }
    Ok(())
}

/// [`Codec`] of every method of `proto/log_service.proto`.
#[derive(Debug, Clone, Default)]
pub struct LogCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Codec for LogCodec<T, U>
where
    T: Message + Send + 'static,
    U: FromRequestBytes + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = LogDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        // The encoder does not depend on the request type.
        ProstCodec::<T, ()>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        LogDecoder(PhantomData)
    }
}

/// What a request decodes into: a protobuf message, or (for OTLP exports,
/// which the server reads with its own zero-copy reader) the bytes as
/// they came.
pub trait FromRequestBytes: Sized {
    fn from_request_bytes(buf: &mut DecodeBuf<'_>) -> Result<Self, Status>;
}

impl<U: Message + Default> FromRequestBytes for U {
    fn from_request_bytes(buf: &mut DecodeBuf<'_>) -> Result<Self, Status> {
        U::decode(buf)
            .map_err(|e| Status::invalid_argument(format!("not a valid protobuf message: {e}")))
    }
}

/// Decodes one request with our status codes.
#[derive(Debug)]
pub struct LogDecoder<U>(PhantomData<U>);

impl<U: FromRequestBytes> Decoder for LogDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        check_len(bytes::Buf::remaining(buf))?;
        U::from_request_bytes(buf).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    /// The limit is the call's, whatever thread polls it: two calls with
    /// different limits (two servers in one process) polled in turn on one
    /// thread, and a call polled on a thread no server set up, each apply
    /// their own. Outside any call, nothing is accepted.
    #[test]
    fn the_size_limit_follows_the_call_not_the_thread() {
        let small = with_message_limit(10, async {
            tokio::task::yield_now().await;
            (check_len(10).is_ok(), check_len(11).map_err(|s| s.code()))
        });
        let large = with_message_limit(1000, async {
            tokio::task::yield_now().await;
            (
                check_len(1000).is_ok(),
                check_len(1001).map_err(|s| s.code()),
            )
        });
        let (small, large) = block_on(async { tokio::join!(small, large) });
        assert_eq!(small, (true, Err(Code::ResourceExhausted)));
        assert_eq!(large, (true, Err(Code::ResourceExhausted)));

        let elsewhere = std::thread::spawn(|| {
            block_on(with_message_limit(10, async {
                check_len(11).map_err(|s| s.code())
            }))
        })
        .join()
        .unwrap();
        assert_eq!(elsewhere, Err(Code::ResourceExhausted));

        let outside = std::thread::spawn(|| check_len(1).map_err(|s| s.code()))
            .join()
            .unwrap();
        assert_eq!(outside, Err(Code::Internal));
    }

    /// A service that checks, inside its future, the length it is called with.
    struct CheckLen;

    impl tower_service::Service<usize> for CheckLen {
        type Response = Result<(), Code>;
        type Error = std::convert::Infallible;
        type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, len: usize) -> Self::Future {
            Box::pin(async move {
                tokio::task::yield_now().await;
                Ok(check_len(len).map_err(|s| s.code()))
            })
        }
    }

    /// The layer runs the wrapped service's future in its limit.
    #[test]
    fn the_layer_scopes_every_call_in_its_limit() {
        use tower_layer::Layer as _;
        use tower_service::Service as _;
        let mut service = MessageLimitLayer(64).layer(CheckLen);
        assert_eq!(block_on(service.call(64)), Ok(Ok(())));
        assert_eq!(block_on(service.call(65)), Ok(Err(Code::ResourceExhausted)));
    }
}
