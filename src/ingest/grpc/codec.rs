//! The protobuf codec of the gRPC services: tonic-prost's encoder, and a
//! decoder that answers bad requests with the status codes a client can act
//! on: INVALID_ARGUMENT for a message that is not valid protobuf (invalid
//! UTF-8 in a string field, among others) where tonic-prost says INTERNAL,
//! and RESOURCE_EXHAUSTED for one above `--max_frame_size`.

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
    Status,
};
use tonic_prost::{ProstCodec, ProstEncoder};

thread_local! {
    /// Largest request accepted, bytes. The generated service code builds
    /// codecs with `Default`, so the limit reaches them through the gRPC
    /// runtime's worker threads, which each server sets up with its own
    /// (several servers can run in one process, as in the tests).
    static MAX_MESSAGE_BYTES: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

/// Sets the largest request the decoder accepts on the calling thread.
pub fn set_max_message_bytes(max: usize) {
    MAX_MESSAGE_BYTES.with(|m| m.set(max));
}

/// [`Codec`] of every method of `proto/log_service.proto`.
#[derive(Debug, Clone, Default)]
pub struct LogCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Codec for LogCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = LogDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        LogDecoder(PhantomData)
    }
}

/// Decodes one protobuf message with our status codes.
#[derive(Debug)]
pub struct LogDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for LogDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let max = MAX_MESSAGE_BYTES.with(std::cell::Cell::get);
        let len = bytes::Buf::remaining(buf);
        if len > max {
            return Err(Status::resource_exhausted(format!(
                "message of {len} bytes exceeds the maximum of {max} bytes"
            )));
        }
        U::decode(buf)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("not a valid protobuf message: {e}")))
    }
}
