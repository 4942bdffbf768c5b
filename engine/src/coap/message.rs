//! Requests and responses as the rest of the engine sees them, and their mapping to coap-lite
//! packets. Owns option encoding details (uint options, Uri-Path, Uri-Query, Block options);
//! knows nothing of sockets or retransmission.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};

use super::block::{BlockError, BlockOption};
use super::stats::Charge;

/// Option numbers this layer uses that coap-lite has no name for.
pub mod option_number {
    /// Q-Block1 (RFC 9177): critical and unsafe, the value of a Block1 option; a body sent in
    /// sets of non-confirmable payloads.
    pub const Q_BLOCK1: u16 = 19;
    /// Request-Tag (RFC 9175): elective; sets the payloads of one Q-Block1 body apart from
    /// another's.
    pub const REQUEST_TAG: u16 = 292;
}

/// A request this endpoint sends to a peer.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingRequest {
    /// GET, POST, PUT, DELETE, ...
    pub method: RequestType,
    /// Uri-Path segments, without slashes.
    pub path: Vec<String>,
    /// Uri-Query parameters, `name=value` each.
    pub query: Vec<String>,
    /// Content-Format of the payload.
    pub content_format: Option<u16>,
    /// Accept: the content format the response should have.
    pub accept: Option<u16>,
    /// Observe: 0 registers an observation, 1 cancels it.
    pub observe: Option<u32>,
    /// Block1 of a block-wise request body (set by the block-wise sender).
    pub block1: Option<BlockOption>,
    /// Block2 asking for one block of a block-wise response.
    pub block2: Option<BlockOption>,
    /// Q-Block1 of a body sent in sets of payloads (set by the Q-Block1 sender).
    pub q_block1: Option<BlockOption>,
    /// Request-Tag: the same on every payload of one Q-Block1 body.
    pub request_tag: Option<Vec<u8>>,
    /// Size1: total size of the body being sent block-wise.
    pub size1: Option<u32>,
    /// The request body (one block of it when block-wise).
    pub payload: Bytes,
    /// Confirmable (retransmitted until acknowledged) or non-confirmable.
    pub confirmable: bool,
    /// At most this many retransmissions, when fewer than the endpoint's own: a peer that
    /// never answered anything is not sent the same request seven times.
    pub max_retransmit: Option<u32>,
}

impl OutgoingRequest {
    /// A confirmable request with no options and no payload.
    pub fn new<S: AsRef<str>>(method: RequestType, path: &[S]) -> Self {
        OutgoingRequest {
            method,
            path: path.iter().map(|s| s.as_ref().to_string()).collect(),
            query: Vec::new(),
            content_format: None,
            accept: None,
            observe: None,
            block1: None,
            block2: None,
            q_block1: None,
            request_tag: None,
            size1: None,
            payload: Bytes::new(),
            confirmable: true,
            max_retransmit: None,
        }
    }

    /// Sets the payload and its content format.
    pub fn with_payload(mut self, content_format: u16, payload: impl Into<Bytes>) -> Self {
        self.content_format = Some(content_format);
        self.payload = payload.into();
        self
    }

    /// Builds the packet to send, with the given message id and token.
    pub fn to_packet(&self, message_id: u16, token: &[u8]) -> Packet {
        let mut packet = Packet::new();
        packet.header.set_version(1);
        packet.header.set_type(if self.confirmable {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        });
        packet.header.code = MessageClass::Request(self.method);
        packet.header.message_id = message_id;
        packet.set_token(token.to_vec());
        for segment in &self.path {
            packet.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
        }
        for query in &self.query {
            packet.add_option(CoapOption::UriQuery, query.as_bytes().to_vec());
        }
        set_uint(
            &mut packet,
            CoapOption::ContentFormat,
            self.content_format.map(u32::from),
        );
        set_uint(&mut packet, CoapOption::Accept, self.accept.map(u32::from));
        set_uint(&mut packet, CoapOption::Observe, self.observe);
        set_uint(&mut packet, CoapOption::Size1, self.size1);
        set_block(&mut packet, CoapOption::Block1, self.block1);
        set_block(&mut packet, CoapOption::Block2, self.block2);
        set_block(&mut packet, Q_BLOCK1, self.q_block1);
        if let Some(tag) = &self.request_tag {
            packet.add_option(REQUEST_TAG, tag.clone());
        }
        packet.payload = self.payload.to_vec();
        packet
    }
}

/// A request received from a peer.
#[derive(Debug, Clone)]
pub struct IncomingRequest {
    /// Who sent it; answers and later requests to this device go to this address.
    pub peer: SocketAddr,
    /// The identity the sender proved (its DTLS PSK identity); `None` over plain CoAP.
    pub identity: Option<Arc<str>>,
    /// The whole message.
    pub packet: Packet,
}

/// A response a request handler gives; the endpoint turns it into one packet (or, for a large
/// payload, into the Block2 block the request asked for).
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// Response code (2.05 Content, 4.04 Not Found, ...).
    pub code: ResponseType,
    /// Content-Format of the payload.
    pub content_format: Option<u16>,
    /// ETag: lets a block-wise client check every block belongs to the same representation.
    pub etag: Option<Vec<u8>>,
    /// Location-Path segments (the registration id after a Register).
    pub location_path: Vec<String>,
    /// Observe sequence number, when this answers an observe registration.
    pub observe: Option<u32>,
    /// Block1 echoed to acknowledge one block of a block-wise request body.
    pub block1: Option<BlockOption>,
    /// Q-Block1 of a Q-Block1 body's answer: the last block held with every block before it
    /// (2.31, 2.04), or the size the server takes (4.13).
    pub q_block1: Option<BlockOption>,
    /// Nothing goes back: a non-confirmable request gets no answer at all, a confirmable one
    /// its empty ACK (RFC 9177: a server answers a set of payloads, not each one).
    pub silent: bool,
    /// Max-Age in seconds: with 5.03, when the client may try again (RFC 7252 section 5.9.3.4).
    pub max_age: Option<u32>,
    /// When set, a non-confirmable answer goes once more this long after the first, the same
    /// message (id and all), which the client drops as a duplicate if it had the first: RFC
    /// 7252 section 4.3 lets a sender repeat a non-confirmable message within
    /// MAX_TRANSMIT_SPAN. For an answer whose loss costs the client far more than a datagram
    /// (a Q-Block1 set's: NON_TIMEOUT and a probe's round trip). An answer piggybacked on an
    /// ACK goes once: the client retransmits its confirmable request.
    pub again_after: Option<Duration>,
    /// The whole representation; the endpoint slices it into Block2 blocks when needed.
    pub payload: Bytes,
    /// Whose wire account the request and this answer go to (a delivery's, for the blocks
    /// the package server serves to its device); `None`: nobody's.
    pub charge: Option<Charge>,
}

impl Response {
    /// A response with only a code.
    pub fn new(code: ResponseType) -> Self {
        Response {
            code,
            content_format: None,
            etag: None,
            location_path: Vec::new(),
            observe: None,
            block1: None,
            q_block1: None,
            silent: false,
            max_age: None,
            again_after: None,
            payload: Bytes::new(),
            charge: None,
        }
    }

    /// No answer to a non-confirmable request, the empty ACK to a confirmable one.
    pub fn silence() -> Self {
        Response {
            silent: true,
            ..Response::new(ResponseType::Continue)
        }
    }

    /// An error response with a diagnostic payload (RFC 7252 section 5.5.2).
    pub fn error(code: ResponseType, diagnostic: impl Into<String>) -> Self {
        let mut response = Response::new(code);
        response.payload = Bytes::from(diagnostic.into());
        response
    }

    /// A 2.05 Content response.
    pub fn content(content_format: u16, payload: impl Into<Bytes>) -> Self {
        let mut response = Response::new(ResponseType::Content);
        response.content_format = Some(content_format);
        response.payload = payload.into();
        response
    }

    /// Writes this response's options and `payload` into a packet whose header is already set.
    pub fn fill_packet(&self, packet: &mut Packet, payload: &[u8], block2: Option<BlockOption>) {
        packet.header.code = MessageClass::Response(self.code);
        for segment in &self.location_path {
            packet.add_option(CoapOption::LocationPath, segment.as_bytes().to_vec());
        }
        if let Some(etag) = &self.etag {
            packet.add_option(CoapOption::ETag, etag.clone());
        }
        set_uint(
            packet,
            CoapOption::ContentFormat,
            self.content_format.map(u32::from),
        );
        set_uint(packet, CoapOption::Observe, self.observe);
        set_uint(packet, CoapOption::MaxAge, self.max_age);
        set_block(packet, CoapOption::Block1, self.block1);
        set_block(packet, Q_BLOCK1, self.q_block1);
        if let Some(block2) = block2 {
            // Size2 on every block (RFC 7959 section 4 allows it): a client resuming from
            // block N learns the size too.
            set_block(packet, CoapOption::Block2, Some(block2));
            set_uint(
                packet,
                CoapOption::Size2,
                u32::try_from(self.payload.len()).ok(),
            );
        }
        packet.payload = payload.to_vec();
    }
}

/// Encodes an unsigned integer option value in the fewest bytes (RFC 7252 section 3.2).
pub fn encode_uint(value: u32) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes[skip..].to_vec()
}

/// Decodes an unsigned integer option value; `None` when longer than four bytes.
pub fn decode_uint(value: &[u8]) -> Option<u32> {
    (value.len() <= 4).then(|| value.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

fn set_uint(packet: &mut Packet, option: CoapOption, value: Option<u32>) {
    if let Some(value) = value {
        packet.add_option(option, encode_uint(value));
    }
}

/// Q-Block1 as coap-lite names an option it does not know.
const Q_BLOCK1: CoapOption = CoapOption::Unknown(option_number::Q_BLOCK1);
/// Request-Tag, likewise.
const REQUEST_TAG: CoapOption = CoapOption::Unknown(option_number::REQUEST_TAG);

fn set_block(packet: &mut Packet, option: CoapOption, block: Option<BlockOption>) {
    if let Some(block) = block {
        packet.add_option(option, block.encode());
    }
}

/// Typed access to the options of a received packet.
pub trait PacketExt {
    /// Uri-Path segments (invalid UTF-8 replaced).
    fn uri_path(&self) -> Vec<String>;
    /// Uri-Query parameters.
    fn uri_query(&self) -> Vec<String>;
    /// Location-Path segments.
    fn location_path(&self) -> Vec<String>;
    /// First value of a uint option; `None` if absent or longer than four bytes.
    fn uint_option(&self, option: CoapOption) -> Option<u32>;
    /// Content-Format number.
    fn content_format_number(&self) -> Option<u16>;
    /// Block1 option, if present.
    fn block1(&self) -> Option<Result<BlockOption, BlockError>>;
    /// Block2 option, if present.
    fn block2(&self) -> Option<Result<BlockOption, BlockError>>;
    /// Q-Block1 option, if present.
    fn q_block1(&self) -> Option<Result<BlockOption, BlockError>>;
    /// Request-Tag option, if present.
    fn request_tag(&self) -> Option<&[u8]>;
    /// Observe option value.
    fn observe_value(&self) -> Option<u32>;
    /// The response code, or `None` for requests and empty messages.
    fn response_code(&self) -> Option<ResponseType>;
    /// The request method, or `None` for responses and empty messages.
    fn request_method(&self) -> Option<RequestType>;
}

impl PacketExt for Packet {
    fn uri_path(&self) -> Vec<String> {
        strings(self, CoapOption::UriPath)
    }

    fn uri_query(&self) -> Vec<String> {
        strings(self, CoapOption::UriQuery)
    }

    fn location_path(&self) -> Vec<String> {
        strings(self, CoapOption::LocationPath)
    }

    fn uint_option(&self, option: CoapOption) -> Option<u32> {
        self.get_first_option(option).and_then(|v| decode_uint(v))
    }

    fn content_format_number(&self) -> Option<u16> {
        self.uint_option(CoapOption::ContentFormat)
            .and_then(|v| u16::try_from(v).ok())
    }

    fn block1(&self) -> Option<Result<BlockOption, BlockError>> {
        self.get_first_option(CoapOption::Block1)
            .map(|v| BlockOption::decode(v))
    }

    fn block2(&self) -> Option<Result<BlockOption, BlockError>> {
        self.get_first_option(CoapOption::Block2)
            .map(|v| BlockOption::decode(v))
    }

    fn q_block1(&self) -> Option<Result<BlockOption, BlockError>> {
        self.get_first_option(Q_BLOCK1)
            .map(|v| BlockOption::decode(v))
    }

    fn request_tag(&self) -> Option<&[u8]> {
        self.get_first_option(REQUEST_TAG).map(Vec::as_slice)
    }

    fn observe_value(&self) -> Option<u32> {
        self.uint_option(CoapOption::Observe)
    }

    fn response_code(&self) -> Option<ResponseType> {
        match self.header.code {
            MessageClass::Response(code) => Some(code),
            _ => None,
        }
    }

    fn request_method(&self) -> Option<RequestType> {
        match self.header.code {
            MessageClass::Request(method) => Some(method),
            _ => None,
        }
    }
}

fn strings(packet: &Packet, option: CoapOption) -> Vec<String> {
    packet
        .get_option(option)
        .map(|values| {
            values
                .iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Short name of a response code, as CoAP writes it ("2.05", "4.04").
pub fn code_name(code: ResponseType) -> String {
    MessageClass::Response(code).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uint_options_use_the_fewest_bytes() {
        assert!(encode_uint(0).is_empty());
        assert_eq!(encode_uint(11542), vec![0x2d, 0x16]);
        assert_eq!(decode_uint(&[0x2d, 0x16]), Some(11542));
        assert_eq!(decode_uint(&[1, 2, 3, 4, 5]), None);
    }

    #[test]
    fn every_block2_answer_carries_size2() {
        let response = Response::content(42, vec![7u8; 5000]);
        for num in [0, 3] {
            let mut packet = Packet::new();
            let block = BlockOption::new(num, true, 1024).unwrap();
            response.fill_packet(&mut packet, &response.payload[..1024], Some(block));
            assert_eq!(
                packet.uint_option(CoapOption::Size2),
                Some(5000),
                "block {num}"
            );
        }
    }

    #[test]
    fn q_block1_and_request_tag_round_trip_through_bytes() {
        let mut request = OutgoingRequest::new(RequestType::Put, &["5", "0", "0"]);
        request.q_block1 = Some(BlockOption::new(33, true, 512).unwrap());
        request.request_tag = Some(vec![9, 8, 7, 6]);
        request.confirmable = false;
        let bytes = request.to_packet(7, &[1, 2, 3, 4]).to_bytes().unwrap();
        let packet = Packet::from_bytes(&bytes).unwrap();
        assert_eq!(packet.q_block1(), Some(Ok(request.q_block1.unwrap())));
        assert_eq!(packet.request_tag(), Some(&[9u8, 8, 7, 6][..]));
        assert_eq!(packet.block1(), None, "Q-Block1 is not Block1");
        assert_eq!(packet.header.get_type(), MessageType::NonConfirmable);

        let mut answer = Response::new(ResponseType::Continue);
        answer.q_block1 = Some(BlockOption::new(39, true, 512).unwrap());
        let mut packet = Packet::new();
        answer.fill_packet(&mut packet, &[], None);
        let packet = Packet::from_bytes(&packet.to_bytes().unwrap()).unwrap();
        assert_eq!(packet.q_block1(), Some(Ok(answer.q_block1.unwrap())));
    }

    #[test]
    fn request_round_trips_through_bytes() {
        let mut request = OutgoingRequest::new(RequestType::Put, &["5", "0", "0"])
            .with_payload(42, vec![1u8, 2, 3]);
        request.block1 = Some(BlockOption::new(2, true, 128).unwrap());
        request.query.push("ep=dev1".into());
        let bytes = request.to_packet(7, &[1, 2, 3, 4]).to_bytes().unwrap();
        let packet = Packet::from_bytes(&bytes).unwrap();
        assert_eq!(packet.uri_path(), vec!["5", "0", "0"]);
        assert_eq!(packet.uri_query(), vec!["ep=dev1"]);
        assert_eq!(packet.content_format_number(), Some(42));
        assert_eq!(
            packet.block1(),
            Some(Ok(BlockOption::new(2, true, 128).unwrap()))
        );
        assert_eq!(packet.request_method(), Some(RequestType::Put));
        assert_eq!(packet.q_block1(), None);
        assert_eq!(packet.request_tag(), None);
        assert_eq!(packet.header.message_id, 7);
        assert_eq!(packet.get_token(), &[1, 2, 3, 4]);
        assert_eq!(packet.payload, vec![1, 2, 3]);
    }
}
