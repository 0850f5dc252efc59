//! The codec of every generated service: prost's, except that a request is decoded from one
//! slice and a body that is not the expected message is `INVALID_ARGUMENT` (the client sent it)
//! rather than prost's `INTERNAL`.

use prost::bytes::Buf;
use prost::DecodeError;
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
        decode_as_slice(buf).map(Some).map_err(|error| {
            Status::invalid_argument(format!(
                "the request is not a valid protobuf message of this method: {error}"
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// Decodes all of `buf` as one `U`, from its first chunk when that is all of it (tonic buffers
/// a message in one `BytesMut`, so it always is there), else from a copy in one piece.
fn decode_as_slice<U: prost::Message + Default>(buf: &mut impl Buf) -> Result<U, DecodeError> {
    let len = buf.remaining();
    if buf.chunk().len() == len {
        let decoded = U::decode(buf.chunk());
        buf.advance(len);
        decoded
    } else {
        U::decode(buf.copy_to_bytes(len).as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn message() -> prost_types::Struct {
        let value = prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue("Sterling".into())),
        };
        prost_types::Struct {
            fields: [("currency".to_owned(), value)].into(),
        }
    }

    #[test]
    fn a_message_in_one_chunk_or_in_pieces_decodes_the_same_and_is_consumed() {
        let bytes = message().encode_to_vec();
        let mut whole = &bytes[..];
        let decoded: prost_types::Struct = decode_as_slice(&mut whole).expect("decodes");
        assert_eq!(decoded, message());
        assert!(whole.is_empty());
        let (front, back) = bytes.split_at(bytes.len() / 2);
        let mut pieces = front.chain(back);
        let decoded: prost_types::Struct = decode_as_slice(&mut pieces).expect("decodes");
        assert_eq!(decoded, message());
        assert_eq!(pieces.remaining(), 0);
    }

    #[test]
    fn bytes_that_are_not_the_message_are_a_decode_error() {
        let bytes = message().encode_to_vec();
        let mut truncated = &bytes[..bytes.len() - 1];
        assert!(decode_as_slice::<prost_types::Struct>(&mut truncated).is_err());
        let garbage = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x12];
        let (front, back) = garbage.split_at(3);
        assert!(decode_as_slice::<prost_types::Struct>(&mut front.chain(back)).is_err());
    }
}
