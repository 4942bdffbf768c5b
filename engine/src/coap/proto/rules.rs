//! The message-level rules of RFC 7252 the core applies to single messages: which datagrams
//! are well formed, which requests carry options that must be refused, how empty messages
//! look, how large a datagram may be, and how an error answer is kept from amplifying. Owns
//! no state.

use bytes::Bytes;
use coap_lite::{MessageClass, MessageType, Packet};

use crate::coap::error::CoapError;
use crate::coap::message::{PacketExt, Response};
use coap_lite::ResponseType;

/// Largest datagram accepted; anything longer is dropped as malformed.
pub const MAX_DATAGRAM: usize = 4096;

/// Critical options this endpoint understands (RFC 7252 section 5.4.1): a request carrying any
/// other critical (odd-numbered) option is answered 4.02 Bad Option.
const KNOWN_CRITICAL_OPTIONS: [u16; 9] = [1, 3, 5, 7, 11, 15, 17, 23, 27];

/// Q-Block1 (RFC 9177): understood only by an endpoint whose request handler takes Q-Block1
/// bodies ([`crate::coap::EndpointConfig::q_block1`]); otherwise refused like any unknown
/// critical option, which is how a client learns the server has none.
const Q_BLOCK1: u16 = crate::coap::message::option_number::Q_BLOCK1;

/// Proxy-Uri and Proxy-Scheme: understood, and answered 5.05 since this is no proxy.
const PROXY_OPTIONS: [u16; 2] = [35, 39];

/// Cuts the diagnostic payload of an error answer until the answer is at most `limit` bytes
/// long (on a character boundary; wholly when nothing of it fits).
pub fn cut_diagnostic(packet: &mut Packet, limit: usize) {
    let Ok(encoded) = packet.to_bytes() else {
        return;
    };
    let excess = encoded.len().saturating_sub(limit);
    if excess == 0 || packet.payload.is_empty() {
        return;
    }
    // A payload cut to nothing takes its marker byte with it.
    let keep = packet.payload.len().saturating_sub(excess);
    let end = match std::str::from_utf8(&packet.payload[..keep]) {
        Ok(_) => keep,
        Err(error) => error.valid_up_to(),
    };
    packet.payload.truncate(end);
}

/// The answer to a request carrying an option this endpoint must not ignore, if any;
/// `q_block1`: whether Q-Block1 is among the options it understands.
pub fn reject_options(packet: &Packet, q_block1: bool) -> Option<Response> {
    for (number, _) in packet.options() {
        if *number == Q_BLOCK1 && q_block1 {
            continue;
        }
        if PROXY_OPTIONS.contains(number) {
            return Some(Response::error(
                ResponseType::ProxyingNotSupported,
                "not a proxy",
            ));
        }
        if number % 2 == 1 && !KNOWN_CRITICAL_OPTIONS.contains(number) {
            return Some(Response::error(
                ResponseType::BadOption,
                format!("unknown critical option {number}"),
            ));
        }
    }
    let blocks = [packet.block1(), packet.block2(), packet.q_block1()];
    for (name, block) in ["Block1", "Block2", "Q-Block1"].into_iter().zip(blocks) {
        if let Some(Err(error)) = block {
            return Some(Response::error(
                ResponseType::BadOption,
                format!("{name}: {error}"),
            ));
        }
    }
    None
}

/// Rules coap-lite does not check: an empty message is only the 4-byte header (section 4.1),
/// and a payload marker must be followed by a payload (section 3).
pub fn well_formed(packet: &Packet, bytes: &[u8]) -> bool {
    if packet.header.code == MessageClass::Empty {
        return bytes.len() == 4;
    }
    payload_marker_followed(bytes)
}

/// Whether a payload marker, if the message has one, is followed by at least one byte. The
/// marker is found by walking the options: a last byte of 0xFF may as well end the token or an
/// option's value (a random token does once in 256 messages), which is no marker at all.
fn payload_marker_followed(bytes: &[u8]) -> bool {
    let token_len = usize::from(bytes.first().map_or(0, |b| b & 0x0F));
    let mut at = 4 + token_len;
    while let Some(&byte) = bytes.get(at) {
        if byte == 0xFF {
            return at + 1 < bytes.len();
        }
        at += 1;
        let (delta, len) = (byte >> 4, byte & 0x0F);
        // An extended delta or length takes 1 (13) or 2 (14) more bytes; 15 is reserved, and
        // coap-lite refuses it before this is asked.
        let extended = |nibble: u8| match nibble {
            13 => 1,
            14 => 2,
            _ => 0,
        };
        at += extended(delta);
        let value_len = match len {
            13 => bytes.get(at).map_or(0, |b| usize::from(*b) + 13),
            14 => bytes
                .get(at..at + 2)
                .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])) + 269),
            n => usize::from(n),
        };
        at += extended(len) + value_len;
    }
    true
}

/// An empty message (ACK, Reset): the 4-byte header of version 1 with no token.
pub fn empty_message(message_type: MessageType, message_id: u16) -> Bytes {
    let type_bits: u8 = match message_type {
        MessageType::Confirmable => 0,
        MessageType::NonConfirmable => 1,
        MessageType::Acknowledgement => 2,
        MessageType::Reset => 3,
    };
    let [high, low] = message_id.to_be_bytes();
    Bytes::copy_from_slice(&[0x40 | type_bits << 4, 0, high, low])
}

/// Encodes a packet into one datagram of at most [`MAX_DATAGRAM`] bytes.
pub fn encode(packet: &Packet) -> Result<Bytes, CoapError> {
    packet
        .to_bytes_with_limit(MAX_DATAGRAM)
        .map(Bytes::from)
        .map_err(|e| CoapError::Encode(format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_last_byte_of_0xff_is_a_payload_marker_only_where_the_options_end() {
        // ACK 4.04, message id 0x1234, token a1 b2 c3 ff: the token's last byte, no marker.
        assert!(payload_marker_followed(&[
            0x64, 0x84, 0x12, 0x34, 0xA1, 0xB2, 0xC3, 0xFF
        ]));
        // 2.05 with Observe (6) = 255, no payload: the option value's last byte.
        assert!(payload_marker_followed(&[
            0x61, 0x45, 0x00, 0x01, 0x07, 0x61, 0xFF
        ]));
        // Content-Format 0 then a real marker with nothing after it.
        assert!(!payload_marker_followed(&[
            0x61, 0x45, 0x00, 0x01, 0x07, 0xC0, 0xFF
        ]));
        // A marker followed by a payload.
        assert!(payload_marker_followed(&[
            0x60, 0x45, 0x00, 0x01, 0xFF, b'x'
        ]));
        // A GET whose option value (13 + 2 extended bytes long) ends in 0xFF.
        let mut long = vec![0x40, 0x01, 0x00, 0x01, 0xBD, 0x02];
        long.extend([0x41; 14]);
        long.push(0xFF);
        assert!(payload_marker_followed(&long));
        long.push(0xFF);
        assert!(!payload_marker_followed(&long));
    }

    #[test]
    fn q_block1_is_refused_unless_the_endpoint_takes_it_and_then_checked() {
        use crate::coap::message::OutgoingRequest;
        use coap_lite::RequestType;
        let mut request = OutgoingRequest::new(RequestType::Put, &["5", "0", "0"]);
        request.q_block1 = Some(crate::coap::BlockOption::new(3, true, 512).unwrap());
        let packet = request.to_packet(1, &[1]);
        let refused = reject_options(&packet, false).expect("4.02 without Q-Block1");
        assert_eq!(refused.code, ResponseType::BadOption);
        assert!(String::from_utf8_lossy(&refused.payload).contains("19"));
        assert_eq!(reject_options(&packet, true), None);
        let mut bad = request.to_packet(1, &[1]);
        bad.clear_option(coap_lite::CoapOption::Unknown(Q_BLOCK1));
        bad.add_option(coap_lite::CoapOption::Unknown(Q_BLOCK1), vec![1, 2, 3, 4]);
        let refused = reject_options(&bad, true).expect("a 4-byte Q-Block1");
        assert_eq!(refused.code, ResponseType::BadOption);
        let diagnostic = String::from_utf8_lossy(&refused.payload).into_owned();
        assert!(diagnostic.starts_with("Q-Block1: "), "{diagnostic}");
    }

    #[test]
    fn empty_messages_are_what_coap_lite_encodes() {
        for message_type in [MessageType::Acknowledgement, MessageType::Reset] {
            let mut packet = Packet::new();
            packet.header.set_version(1);
            packet.header.set_type(message_type);
            packet.header.code = MessageClass::Empty;
            packet.header.message_id = 0xA1B2;
            let expected = packet.to_bytes().unwrap();
            assert_eq!(empty_message(message_type, 0xA1B2), expected);
        }
    }
}
