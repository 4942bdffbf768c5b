//! A blocking DTLS 1.2 PSK client (OpenSSL's, suite PSK-AES128-CCM8) for tests and benchmarks
//! that act on single records: over a loopback UDP socket, where the caller sees every
//! datagram it sends (to replay one) and can stop a handshake half way (to hold a server's
//! handshake slot), resume a session from its ticket, close it with a close_notify, or drop the
//! connection and keep the socket (the server's session stays). No retransmission: loopback loses nothing.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use coap_lite::{ContentFormat, MessageClass, MessageType, Packet, ResponseType};
use fota_engine::coap::dtls::{Pipe, record};
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslMethod, SslOptions, SslSession, SslStream, SslVersion,
};

/// Largest datagram the client sends.
const MTU: u32 = 1280;

/// Longest a read waits for the server.
const READ_BOUND: Duration = Duration::from_secs(5);

/// One client connection to a coaps server.
pub struct DtlsClient {
    socket: UdpSocket,
    stream: SslStream<Pipe>,
    /// Every datagram sent, in order.
    pub sent: Vec<Vec<u8>>,
}

impl DtlsClient {
    /// A client of `server` with `identity` and `key`, resuming `session` if given; not yet
    /// connected.
    pub fn new(
        server: SocketAddr,
        credential: (&str, &[u8]),
        session: Option<&SslSession>,
    ) -> DtlsClient {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        DtlsClient::on_socket(socket, server, credential, session)
    }

    /// As [`DtlsClient::new`], from `socket` (another client's: the same address).
    pub fn on_socket(
        socket: UdpSocket,
        server: SocketAddr,
        (identity, key): (&str, &[u8]),
        session: Option<&SslSession>,
    ) -> DtlsClient {
        let mut context = SslContext::builder(SslMethod::dtls_client()).unwrap();
        context
            .set_min_proto_version(Some(SslVersion::DTLS1_2))
            .unwrap();
        context.set_cipher_list("PSK-AES128-CCM8").unwrap();
        let (identity, key) = (identity.to_string(), key.to_vec());
        context.set_psk_client_callback(move |_, _hint, identity_out, key_out| {
            identity_out[..identity.len()].copy_from_slice(identity.as_bytes());
            identity_out[identity.len()] = 0;
            key_out[..key.len()].copy_from_slice(&key);
            Ok(key.len())
        });
        // A path MTU as on a real link: OpenSSL cannot ask a memory pipe, and with its minimum
        // it would cut a ClientHello that carries a ticket into fragments, which servers'
        // stateless cookie exchange (OpenSSL's DTLSv1_listen among them) drops.
        context.set_options(SslOptions::NO_QUERY_MTU);
        let mut ssl = Ssl::new(&context.build()).unwrap();
        ssl.set_mtu(MTU).unwrap();
        ssl.set_connect_state();
        if let Some(session) = session {
            unsafe { ssl.set_session(session).unwrap() };
        }
        socket.connect(server).unwrap();
        socket.set_read_timeout(Some(READ_BOUND)).unwrap();
        DtlsClient {
            socket,
            stream: SslStream::new(ssl, Pipe::default()).unwrap(),
            sent: Vec::new(),
        }
    }

    /// Sends what OpenSSL wrote.
    fn flush(&mut self) {
        let written = self.stream.get_mut().take_sent();
        self.send(written);
    }

    /// Sends `datagrams`, in order, and keeps them in `sent`.
    fn send(&mut self, datagrams: Vec<Vec<u8>>) {
        for datagram in datagrams {
            self.socket.send(&datagram).unwrap();
            self.sent.push(datagram);
        }
    }

    /// Waits for one datagram from the server and hands it to OpenSSL; false on timeout.
    fn take_one(&mut self) -> bool {
        let mut buffer = [0u8; 2048];
        match self.socket.recv(&mut buffer) {
            Ok(len) => {
                self.stream.get_mut().push(&buffer[..len]);
                true
            }
            Err(_) => false,
        }
    }

    /// Runs the handshake to its end; an error when the server ends it or stops answering.
    pub fn connect(&mut self) -> Result<(), String> {
        loop {
            match self.stream.connect() {
                Ok(()) => {
                    // A resumed handshake ends with the client's flight.
                    self.flush();
                    return Ok(());
                }
                Err(error) if error.code() == ErrorCode::WANT_READ => {
                    self.flush();
                    if !self.take_one() {
                        return Err("the server stopped answering the handshake".into());
                    }
                }
                Err(error) => {
                    self.flush();
                    return Err(error.to_string());
                }
            }
        }
    }

    /// The first ClientHello of the handshake (not sent).
    pub fn first_hello(&mut self) -> Vec<u8> {
        let _ = self.stream.connect();
        let mut written = self.stream.get_mut().take_sent();
        written.remove(0)
    }

    /// Sends the first ClientHello, returns the server's cookie, and stops there: the server
    /// holds a handshake for this client that never completes (when it has room for one).
    pub fn stop_after_cookie(&mut self) {
        let _ = self.stream.connect();
        self.flush();
        assert!(
            self.take_one(),
            "the server answers a ClientHello with a cookie"
        );
        let _ = self.stream.connect();
        self.flush();
    }

    /// Runs the handshake up to the client's last flight (ClientKeyExchange, ChangeCipherSpec
    /// and the sealed Finished) and returns that flight unsent: to deliver late with
    /// [`DtlsClient::send_raw`], then finish with [`DtlsClient::connect`], or never (the
    /// server holds a handshake for it meanwhile). An error when the server stops answering.
    pub fn hold_last_flight(&mut self) -> Result<Vec<Vec<u8>>, String> {
        loop {
            let _ = self.stream.connect();
            let written = self.stream.get_mut().take_sent();
            if written.iter().any(|d| record::has_sealed_handshake(d)) {
                return Ok(written);
            }
            self.send(written);
            if !self.take_one() {
                return Err("the server stopped answering the handshake".into());
            }
        }
    }

    /// Sends `request` sealed, and the CoAP answer to it.
    pub fn exchange(&mut self, request: &Packet) -> Option<Packet> {
        self.send_sealed(request);
        self.read_packet()
    }

    /// Waits for a request from the server and answers it with `code` and a text `payload`,
    /// piggybacked; false when no request came.
    pub fn answer_one(&mut self, code: ResponseType, payload: &[u8]) -> bool {
        let Some(request) = self.read_packet() else {
            return false;
        };
        let mut answer = Packet::new();
        answer.header.set_type(MessageType::Acknowledgement);
        answer.header.code = MessageClass::Response(code);
        answer.header.message_id = request.header.message_id;
        answer.set_token(request.get_token().to_vec());
        answer.set_content_format(ContentFormat::TextPlain);
        answer.payload = payload.to_vec();
        self.send_sealed(&answer);
        true
    }

    /// Sends `packet` sealed.
    fn send_sealed(&mut self, packet: &Packet) {
        self.stream.ssl_write(&packet.to_bytes().unwrap()).unwrap();
        self.flush();
    }

    /// The next CoAP message from the server.
    fn read_packet(&mut self) -> Option<Packet> {
        let mut plaintext = [0u8; 2048];
        loop {
            match self.stream.ssl_read(&mut plaintext) {
                Ok(len) => return Packet::from_bytes(&plaintext[..len]).ok(),
                Err(error) if error.code() == ErrorCode::WANT_READ => {
                    if !self.take_one() {
                        return None;
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Sends `datagram` as it is, outside the connection (a replay, or garbage).
    pub fn send_raw(&self, datagram: &[u8]) {
        self.socket.send(datagram).unwrap();
    }

    /// Ends the session as a client shutting down does: a close_notify alert.
    pub fn close(&mut self) {
        let _ = self.stream.shutdown();
        self.flush();
    }

    /// Drops the connection's state and keeps the socket: the server still holds the session.
    pub fn into_socket(self) -> UdpSocket {
        self.socket.try_clone().expect("a socket handle")
    }

    /// The session, to resume.
    pub fn session(&self) -> SslSession {
        self.stream.ssl().session().unwrap().to_owned()
    }

    /// Whether the handshake was abbreviated (a resumed session).
    pub fn resumed(&self) -> bool {
        self.stream.ssl().session_reused()
    }
}

impl Drop for DtlsClient {
    /// Leaves as a device going to sleep does: no close_notify, and the session stays
    /// resumable (OpenSSL marks a session freed without a shutdown as not resumable).
    fn drop(&mut self) {
        crate::dtls_socket::keep_resumable(self.stream.ssl());
    }
}
