//! The codec of every generated service: prost's, except that a request body that is not the
//! expected message is `INVALID_ARGUMENT` (the client sent it) rather than prost's `INTERNAL`.

use prost::bytes::Buf;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// [`ProstCodec`] with client-facing decode errors.
#[derive(Debug, Clone)]
pub struct ProtoCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        Self(ProstCodec::default())
    }
}

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProtoDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProtoDecoder(self.0.decoder())
    }
}

/// Prost's decoding of a whole message from one contiguous slice, answering `INVALID_ARGUMENT`
/// for bytes that do not decode.
///
/// Prost reads a `&[u8]` with inlined slice operations; through [`DecodeBuf`] every varint,
/// key and string goes through its length checks and `BytesMut`'s bookkeeping, several times per
/// field of every record of an upsert batch. The message is decoded as the slice it already is
/// in that buffer (ADR 0022).
#[derive(Debug)]
pub struct ProtoDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for ProtoDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let len = buf.remaining();
        // tonic buffers a message in one `BytesMut`, so its first chunk is all of it.
        let decoded = if buf.chunk().len() == len {
            let decoded = U::decode(buf.chunk());
            buf.advance(len);
            decoded
        } else {
            U::decode(buf.copy_to_bytes(len).as_ref())
        };
        decoded.map(Some).map_err(|error| {
            Status::invalid_argument(format!(
                "the request is not a valid protobuf message of this method: {error}"
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
