//! `Pipe`: the in-memory datagram stream an OpenSSL DTLS connection reads and writes, so that
//! one socket serves every peer: the socket hands each peer's datagrams in, and sends what the
//! connection wrote. Every read takes exactly one datagram and every write is one (DTLS records
//! never span datagrams); an empty pipe answers "would block", which OpenSSL takes as "wait".
//! The reference DTLS client (fota-device) reads and writes through one too.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

/// Datagrams in from the peer and out to it.
#[derive(Debug, Default)]
pub struct Pipe {
    /// Received, not yet read by OpenSSL.
    inbound: VecDeque<Vec<u8>>,
    /// Written by OpenSSL, not yet sent.
    outbound: Vec<Vec<u8>>,
}

impl Pipe {
    /// A pipe holding one received datagram.
    pub fn with(datagram: &[u8]) -> Pipe {
        let mut pipe = Pipe::default();
        pipe.push(datagram);
        pipe
    }

    /// Hands OpenSSL a received datagram.
    pub fn push(&mut self, datagram: &[u8]) {
        self.inbound.push_back(datagram.to_vec());
    }

    /// What OpenSSL wrote since the last call, one datagram each.
    pub fn take_sent(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.outbound)
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
}
