//! The `Contribute` call with requests encoded once, up front.
//!
//! A [`StreamingContributor`](crate::StreamingContributor) keeps every unacknowledged batch to
//! resend it after a reconnect. Kept as a message, each batch would be deep-copied (a thousand
//! records' `Struct`s) to hand one copy to the send queue; kept as encoded [`Bytes`], the queue
//! and the resend buffer share one buffer and the batch is encoded exactly once.

use bytes::{BufMut, Bytes};
use prost::Message;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{IntoStreamingRequest, Status, Streaming};
use tonic_prost::ProstDecoder;
use tributary_proto::contribution::v1 as pb;

use crate::{BearerAuth, MAX_MESSAGE_BYTES};

const CONTRIBUTE: &str = "/tributary.contribution.v1.Contribution/Contribute";

/// An encoded `ContributeRequest`.
pub(crate) fn encode(request: &pb::ContributeRequest) -> Bytes {
    Bytes::from(request.encode_to_vec())
}

/// Starts a `Contribute` call whose outgoing messages are already encoded.
pub(crate) async fn contribute(
    channel: Channel,
    token: &str,
    requests: impl IntoStreamingRequest<Message = Bytes>,
) -> Result<Streaming<pb::ContributeResponse>, Status> {
    let service = InterceptedService::new(channel, BearerAuth::new(token));
    let mut grpc = tonic::client::Grpc::new(service)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("the channel is not ready: {e}")))?;
    let response = grpc
        .streaming(
            requests.into_streaming_request(),
            PathAndQuery::from_static(CONTRIBUTE),
            PreEncodedCodec,
        )
        .await?;
    Ok(response.into_inner())
}

/// Writes pre-encoded requests as they are; decodes responses with prost.
struct PreEncodedCodec;

impl Codec for PreEncodedCodec {
    type Encode = Bytes;
    type Decode = pb::ContributeResponse;
    type Encoder = BytesEncoder;
    type Decoder = ProstDecoder<pb::ContributeResponse>;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}
