//! `Pipe`: the in-memory datagram stream an OpenSSL DTLS connection reads and writes, so that
//! one socket serves every peer: the socket hands each peer's datagrams in, and sends what the
//! connection wrote. Every read takes exactly one datagram (OpenSSL reads every record in it);
//! an empty pipe answers "would block", which OpenSSL takes as "wait". OpenSSL writes a record
//! at a time: what it wrote in one go (a handshake flight) leaves packed into as few datagrams
//! as the path MTU allows (RFC 6347 section 4.1.1), so a flight is lost or delivered whole and
//! in order, not record by record. The reference DTLS client (fota-device) uses one too.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

/// The largest datagram records are packed into unless [`Pipe::set_mtu`] says otherwise.
pub const DEFAULT_MTU: usize = 1280;

/// Datagrams in from the peer and out to it.
#[derive(Debug)]
pub struct Pipe {
    /// Received, not yet read by OpenSSL.
    inbound: VecDeque<Vec<u8>>,
    /// Records written by OpenSSL, not yet sent.
    outbound: Vec<Vec<u8>>,
    /// The largest datagram records are packed into.
    mtu: usize,
}

impl Default for Pipe {
    fn default() -> Self {
        Pipe {
            inbound: VecDeque::new(),
            outbound: Vec::new(),
            mtu: DEFAULT_MTU,
        }
    }
}

impl Pipe {
    /// A pipe holding one received datagram.
    pub fn with(datagram: &[u8]) -> Pipe {
        let mut pipe = Pipe::default();
        pipe.push(datagram);
        pipe
    }

    /// Packs records into datagrams of at most `mtu` bytes (OpenSSL's own MTU: no record is
    /// larger).
    pub fn set_mtu(&mut self, mtu: usize) {
        self.mtu = mtu;
    }

    /// Hands OpenSSL a received datagram.
    pub fn push(&mut self, datagram: &[u8]) {
        self.inbound.push_back(datagram.to_vec());
    }

    /// What OpenSSL wrote since the last call: its records in order, packed into datagrams.
    pub fn take_sent(&mut self) -> Vec<Vec<u8>> {
        let mut datagrams: Vec<Vec<u8>> = Vec::new();
        for record in std::mem::take(&mut self.outbound) {
            match datagrams.last_mut() {
                Some(last) if last.len() + record.len() <= self.mtu => last.extend(record),
                _ => datagrams.push(record),
            }
        }
        datagrams
    }

    /// Drops received datagrams OpenSSL did not read (a connection being torn down).
    pub fn clear(&mut self) {
        self.inbound.clear();
    }
}

impl Read for Pipe {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let Some(datagram) = self.inbound.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        // A datagram longer than OpenSSL's buffer is cut, as a socket would cut it.
        let len = datagram.len().min(buffer.len());
        buffer[..len].copy_from_slice(&datagram[..len]);
        Ok(len)
    }
}

impl Write for Pipe {
    fn write(&mut self, datagram: &[u8]) -> io::Result<usize> {
        self.outbound.push(datagram.to_vec());
        Ok(datagram.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_takes_one_datagram_and_an_empty_pipe_would_block() {
        let mut pipe = Pipe::with(b"first");
        pipe.push(b"second");
        let mut buffer = [0u8; 16];
        assert_eq!(pipe.read(&mut buffer).unwrap(), 5);
        assert_eq!(&buffer[..5], b"first");
        assert_eq!(pipe.read(&mut buffer).unwrap(), 6);
        let error = pipe.read(&mut buffer).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        pipe.write_all(b"out").unwrap();
        assert_eq!(pipe.take_sent(), vec![b"out".to_vec()]);
        assert!(pipe.take_sent().is_empty());
    }

    #[test]
    fn records_written_in_one_go_leave_packed_up_to_the_mtu() {
        let mut pipe = Pipe::default();
        pipe.set_mtu(10);
        for record in [&b"abcd"[..], b"efg", b"hijk", b"lmnopqrs", b"t"] {
            pipe.write_all(record).unwrap();
        }
        let packed: Vec<&[u8]> = vec![b"abcdefg", b"hijk", b"lmnopqrst"];
        assert_eq!(pipe.take_sent(), packed);
    }
}
