//! The nodes' internal link: one TCP connection per conversation, frames as JSON lines (at
//! most [`MAX_FRAME`] bytes each), opened by a challenge the accepting node sends and the
//! connecting node answers with an HMAC-SHA256 of it under the cluster's secret, so a
//! stranger who can reach the port (or read an earlier conversation) cannot start attempts.
//! The frames that follow are not encrypted: the link belongs on the nodes' private network.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::campaign::AttemptOutcome;
use crate::campaign::task::Task;
use crate::lwm2m::{DeviceFailure, DeviceOperation, DeviceOutline, LwM2mPath, Observed, Record};
use crate::transfer::{Gate, Stage};

/// Longest frame either side reads.
pub const MAX_FRAME: u64 = 1 << 20;

/// Longest wait for a node to accept a conversation.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the nodes say to each other.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frame {
    /// Accepting node: prove you hold the secret.
    Challenge(String),
    /// Connecting node: who it is, and the proof (hex HMAC of the challenge).
    Hello {
        /// Its name.
        node: String,
        /// HMAC-SHA256 of the challenge under the cluster's secret, in hex.
        proof: String,
    },
    /// Coordinator to owner: run this attempt on a device of yours.
    Attempt(Box<RemoteAttempt>),
    /// Coordinator to owner: what the task lets the attempt do now.
    Gate(Gate),
    /// Owner to coordinator: the delivery reached this stage.
    Stage(Stage),
    /// Owner to coordinator: how the attempt ended (the conversation ends with it).
    Outcome(AttemptOutcome),
    /// Member to coordinator: this device's record was written; index it again.
    Learned(String),
    /// Member to coordinator: a registration event, for the journal (what
    /// [`crate::webhooks::registrations::data`] says of it).
    Registration(serde_json::Value),
    /// Member to coordinator: this device registered or sent an Update here (operations
    /// queued for it may run now).
    Woke(String),
    /// Coordinator to owner: what does this device register?
    Describe(String),
    /// Owner to coordinator: what it registers, while it is registered.
    Outline(Option<DeviceOutline>),
    /// Coordinator to owner: run this operation on a device of yours.
    Operate(Box<RemoteOperation>),
    /// Owner to coordinator: what the operation read, or why it failed.
    Operated(Result<Vec<Record>, DeviceFailure>),
    /// Coordinator to owner: observe this path of a device of yours (until the conversation
    /// ends).
    Observe {
        /// The device.
        endpoint: String,
        /// What to observe.
        path: LwM2mPath,
    },
    /// Owner to coordinator: the observation's value now.
    Observed(Observed),
}

/// An integrator's operation sent to the device's owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteOperation {
    /// The device.
    pub endpoint: String,
    /// What to do.
    pub operation: DeviceOperation,
    /// How long to wait for the device to be reachable, in milliseconds.
    pub wait_ms: u64,
}

/// An attempt sent to the device's owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteAttempt {
    /// The task.
    pub task: Task,
    /// The device.
    pub endpoint: String,
    /// Retries used so far.
    pub attempt: u32,
    /// What the task lets it do at the start.
    pub gate: Gate,
    /// The epoch of the coordinator that sends it: an owner that has seen a newer one
    /// refuses it.
    pub epoch: u64,
}

/// Why a conversation ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("internal link: {0}")]
    Io(#[from] std::io::Error),
    #[error("internal link: a frame that does not parse: {0}")]
    Frame(#[from] serde_json::Error),
    #[error("internal link: a frame over {MAX_FRAME} bytes")]
    TooLong,
    #[error("internal link: the peer closed the connection")]
    Closed,
    #[error("internal link: the peer does not hold the cluster's secret")]
    Refused,
    #[error("internal link: {0} where a challenge or a hello was due")]
    Unexpected(&'static str),
}

/// One side of a conversation.
pub struct Conversation {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// What was read of the next frame: kept across calls, so a [`Conversation::receive`]
    /// dropped in a `select!` for another branch loses nothing.
    partial: Vec<u8>,
}

impl Conversation {
    fn of(stream: TcpStream) -> Conversation {
        let _ = stream.set_nodelay(true);
        let (read, writer) = stream.into_split();
        Conversation {
            reader: BufReader::new(read),
            writer,
            partial: Vec::new(),
        }
    }

    /// Connects to `addr` as `node`, answering its challenge with `secret`.
    pub async fn open(addr: &str, node: &str, secret: &[u8]) -> Result<Conversation, LinkError> {
        let mut conversation = Conversation::of(TcpStream::connect(addr).await?);
        let Frame::Challenge(challenge) = conversation.receive().await? else {
            return Err(LinkError::Unexpected("another frame"));
        };
        let proof = hex::encode(mac(secret, challenge.as_bytes()).finalize().into_bytes());
        let hello = Frame::Hello {
            node: node.to_string(),
            proof,
        };
        conversation.send(&hello).await?;
        Ok(conversation)
    }

    /// [`Conversation::open`], given up after [`CONNECT_TIMEOUT`].
    pub async fn open_within(
        addr: &str,
        node: &str,
        secret: &[u8],
    ) -> Result<Conversation, LinkError> {
        tokio::time::timeout(CONNECT_TIMEOUT, Conversation::open(addr, node, secret))
            .await
            .map_err(|_| LinkError::Io(std::io::ErrorKind::TimedOut.into()))?
    }

    /// Accepts `stream` if its node proves it holds `secret`; the node's name.
    pub async fn accept(
        stream: TcpStream,
        secret: &[u8],
    ) -> Result<(Conversation, String), LinkError> {
        let mut conversation = Conversation::of(stream);
        let challenge = hex::encode(crate::entropy::random::<[u8; 32]>());
        conversation
            .send(&Frame::Challenge(challenge.clone()))
            .await?;
        let Frame::Hello { node, proof } = conversation.receive().await? else {
            return Err(LinkError::Unexpected("another frame"));
        };
        let proof = hex::decode(proof).map_err(|_| LinkError::Refused)?;
        mac(secret, challenge.as_bytes())
            .verify_slice(&proof)
            .map_err(|_| LinkError::Refused)?;
        Ok((conversation, node))
    }

    /// Sends one frame.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), LinkError> {
        let mut line = serde_json::to_vec(frame)?;
        line.push(b'\n');
        self.writer.write_all(&line).await?;
        Ok(())
    }

    /// Receives one frame. Cancel-safe: what a dropped call read is kept for the next.
    pub async fn receive(&mut self) -> Result<Frame, LinkError> {
        read_line(&mut self.reader, &mut self.partial).await?;
        let frame = serde_json::from_slice(&self.partial[..self.partial.len() - 1]);
        self.partial.clear();
        Ok(frame?)
    }
}

/// Reads into `line` up to and with its newline, at most [`MAX_FRAME`] bytes before it.
async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    line: &mut Vec<u8>,
) -> Result<(), LinkError> {
    let room = (MAX_FRAME + 1).saturating_sub(line.len() as u64);
    (&mut *reader).take(room).read_until(b'\n', line).await?;
    if line.last() == Some(&b'\n') {
        return Ok(());
    }
    // No newline: the room ran out (a frame over the limit), or the stream ended.
    Err(if line.len() as u64 > MAX_FRAME {
        LinkError::TooLong
    } else {
        LinkError::Closed
    })
}

fn mac(secret: &[u8], message: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(message);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair(
        secret: &'static [u8],
        given: &'static [u8],
    ) -> (
        Result<Conversation, LinkError>,
        Result<(Conversation, String), LinkError>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepting = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            Conversation::accept(stream, secret).await
        });
        let opened = Conversation::open(&addr, "member-1", given).await;
        (opened, accepting.await.unwrap())
    }

    #[tokio::test]
    async fn a_node_with_the_secret_is_accepted_and_frames_pass_both_ways() {
        let (opened, accepted) = pair(b"cluster secret", b"cluster secret").await;
        let (mut accepted, node) = accepted.unwrap();
        let mut opened = opened.unwrap();
        assert_eq!(node, "member-1");
        opened.send(&Frame::Learned("dev-1".into())).await.unwrap();
        let Frame::Learned(endpoint) = accepted.receive().await.unwrap() else {
            panic!("another frame");
        };
        assert_eq!(endpoint, "dev-1");
        accepted.send(&Frame::Gate(Gate::Closed)).await.unwrap();
        assert!(matches!(
            opened.receive().await.unwrap(),
            Frame::Gate(Gate::Closed)
        ));
    }

    #[tokio::test]
    async fn a_node_without_the_secret_is_refused() {
        let (_, accepted) = pair(b"cluster secret", b"a guess").await;
        assert!(matches!(accepted, Err(LinkError::Refused)));
    }

    #[tokio::test]
    async fn a_frame_half_read_when_another_branch_won_is_read_whole_later() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let writing = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.write_all(b"{\"learned\":").await.unwrap();
            stream.flush().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            stream.write_all(b"\"dev-1\"}\n").await.unwrap();
            stream
        });
        let mut conversation = Conversation::of(TcpStream::connect(addr).await.unwrap());
        // The first half arrives; a timer wins the select and drops the receive.
        let cut = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            conversation.receive(),
        );
        assert!(cut.await.is_err(), "nothing whole yet");
        let Frame::Learned(endpoint) = conversation.receive().await.unwrap() else {
            panic!("another frame");
        };
        assert_eq!(endpoint, "dev-1");
        drop(writing.await.unwrap());
    }

    #[tokio::test]
    async fn an_endless_line_is_cut_off_not_buffered() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let flood = tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let chunk = vec![b'x'; 64 * 1024];
            while stream.write_all(&chunk).await.is_ok() {}
        });
        let (stream, _) = listener.accept().await.unwrap();
        let accepted = Conversation::accept(stream, b"secret").await;
        assert!(
            matches!(accepted, Err(LinkError::TooLong)),
            "{:?}",
            accepted.err()
        );
        flood.abort();
    }
}
