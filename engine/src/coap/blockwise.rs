//! Client side of block-wise transfer (RFC 7959): sending a large body with Block1 and reading a
//! large resource with Block2, honouring the peer's block size. (The server side, slicing a
//! response into Block2 blocks, lives in the endpoint's response path; bodies sent in bursts,
//! Q-Block1, in [`super::qblock1`].)

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use coap_lite::{CoapOption, Packet, ResponseType};

use super::block::{BlockOption, size_exponent};
use super::endpoint::Endpoint;
use super::error::CoapError;
use super::message::{OutgoingRequest, PacketExt};
use super::stats::WireMeter;

/// Waits before a payload goes on the link, so a budget of bytes per second is kept (a cell's
/// airtime, say). Cheap to clone.
#[derive(Clone)]
pub struct Pacer(Arc<PaceFn>);

/// What a [`Pacer`] runs: the future that ends when `bytes` may go out.
type PaceFn = dyn Fn(usize) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync;

impl Pacer {
    /// A pacer that waits as `wait` says for each payload's bytes.
    pub fn new(
        wait: impl Fn(usize) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static,
    ) -> Self {
        Pacer(Arc::new(wait))
    }

    /// Ends when `bytes` of payload may go out.
    pub async fn before(&self, bytes: usize) {
        (self.0)(bytes).await;
    }
}

impl fmt::Debug for Pacer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pacer")
    }
}

/// A body to send with Block1, possibly resuming part-way.
#[derive(Debug, Clone)]
pub struct Block1Upload {
    /// Method, path and content format of every block request; its payload is ignored.
    pub request: OutgoingRequest,
    /// The whole body; blocks are slices of it, never copies of the whole.
    pub body: Bytes,
    /// Block size to start with (16 to 1024, a power of two); the peer may ask for smaller.
    pub block_size: usize,
    /// First byte to send: 0, or where a previous upload stopped (a multiple of the block size).
    pub start_offset: usize,
    /// Waited on before each block's payload goes out (not before the endpoint's
    /// retransmissions of it); `None`: no budget.
    pub pacer: Option<Pacer>,
}

/// How a Block1 upload ended.
#[derive(Debug)]
pub struct Block1Outcome {
    /// The peer's last response: 2.04 Changed after the last block, or the error that stopped it.
    pub response: Packet,
    /// Bytes the peer acknowledged, counted from the start of the body.
    pub acknowledged: usize,
    /// Block size in use at the end (after any negotiation).
    pub block_size: usize,
}

/// Progress of a Block1 upload, told to the caller as it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block1Progress {
    /// A block request for `len` body bytes at `offset` goes out (once per block, however
    /// often the message layer retransmits it); `again` when this upload sent that block
    /// before (Q-Block1 only: a block the peer listed missing, or the probe of a set left
    /// unanswered).
    Sending {
        offset: usize,
        len: usize,
        again: bool,
    },
    /// The peer accepted every byte before this offset.
    Acknowledged(usize),
}

/// Sends `upload` to `peer` block by block, each a confirmable request, telling `progress`
/// what goes out and what the peer accepted. Ends at the last block or at the first error
/// response, which is returned, not raised: the caller decides what 4.13, 4.08 or 5.03 mean
/// for it.
pub async fn send_block1(
    endpoint: &Endpoint,
    peer: SocketAddr,
    upload: &Block1Upload,
    meter: &WireMeter,
    mut progress: impl FnMut(Block1Progress),
) -> Result<Block1Outcome, CoapError> {
    let fail = |reason: String| CoapError::Blockwise { peer, reason };
    size_exponent(upload.block_size).map_err(|e| fail(e.to_string()))?;
    let len = upload.body.len();
    let mut size = upload.block_size;
    let mut offset = upload.start_offset.min(len);
    if !offset.is_multiple_of(size) {
        return Err(fail(format!(
            "start offset {offset} is not a multiple of {size}"
        )));
    }
    let mut first = true;
    loop {
        let end = (offset + size).min(len);
        let more = end < len;
        let block = BlockOption::new((offset / size) as u32, more, size)
            .map_err(|e| fail(e.to_string()))?;
        let mut request = upload.request.clone();
        request.block1 = Some(block);
        request.size1 = first.then_some(len as u32);
        request.payload = upload.body.slice(offset..end);
        first = false;
        if let Some(pacer) = &upload.pacer {
            pacer.before(end - offset).await;
        }
        progress(Block1Progress::Sending {
            offset,
            len: end - offset,
            again: false,
        });
        let response = endpoint.request_metered(peer, &request, meter).await?;
        let code = response.response_code().unwrap_or(ResponseType::UnKnown);
        let peer_block = response
            .block1()
            .transpose()
            .map_err(|e| fail(e.to_string()))?;
        if code == ResponseType::RequestEntityTooLarge {
            match peer_block.map(|b| b.size()).filter(|s| *s < size) {
                // The peer's buffer is smaller: go on from here with its size (block 0 when
                // this was the first block), and keep that size to the end.
                Some(smaller) => {
                    size = smaller;
                    continue;
                }
                None => return Ok(outcome(response, offset, size)),
            }
        }
        if code.is_error() {
            return Ok(outcome(response, offset, size));
        }
        if let Some(acked) = peer_block.filter(|b| b.num != block.num && b.size() == size) {
            return Err(fail(format!(
                "sent block {} but the peer acknowledged block {}",
                block.num, acked.num
            )));
        }
        offset = end;
        progress(Block1Progress::Acknowledged(offset));
        if !more {
            return Ok(outcome(response, offset, size));
        }
        if let Some(smaller) = peer_block.map(|b| b.size()).filter(|s| *s < size) {
            // Late negotiation (section 2.5): the peer wants smaller blocks from now on.
            size = smaller;
        }
    }
}

fn outcome(response: Packet, acknowledged: usize, block_size: usize) -> Block1Outcome {
    Block1Outcome {
        response,
        acknowledged,
        block_size,
    }
}

/// Reads a resource with Block2, from block 0, asking for `block_size` blocks (the peer may
/// answer with smaller ones). Checks that every block is the one asked for and carries the same
/// ETag, and stops at `max_body` bytes. Returns the last response and the whole body; an error
/// response ends the read and is returned with what was read before it. The bytes of every
/// exchange go to `meter`.
pub async fn get_block2(
    endpoint: &Endpoint,
    peer: SocketAddr,
    request: &OutgoingRequest,
    block_size: usize,
    max_body: usize,
    meter: &WireMeter,
) -> Result<(Packet, Vec<u8>), CoapError> {
    let fail = |reason: String| CoapError::Blockwise { peer, reason };
    let mut size = block_size;
    let mut body = Vec::new();
    let mut etag: Option<Vec<u8>> = None;
    loop {
        let mut block_request = request.clone();
        block_request.block2 = Some(
            BlockOption::new((body.len() / size) as u32, false, size)
                .map_err(|e| fail(e.to_string()))?,
        );
        let response = endpoint
            .request_metered(peer, &block_request, meter)
            .await?;
        if response.response_code().is_none_or(|c| c.is_error()) {
            return Ok((response, body));
        }
        let Some(block) = response
            .block2()
            .transpose()
            .map_err(|e| fail(e.to_string()))?
        else {
            // The whole representation in one message.
            let payload = response.payload.clone();
            return Ok((response, payload));
        };
        check_same_representation(&mut etag, &response).map_err(fail)?;
        if block.offset() != body.len() {
            return Err(fail(format!(
                "asked for offset {} but got {}",
                body.len(),
                block.offset()
            )));
        }
        if block.more && response.payload.len() != block.size() {
            return Err(fail(format!(
                "block {} has {} bytes, not {}",
                block.num,
                response.payload.len(),
                block.size()
            )));
        }
        if body.len() + response.payload.len() > max_body {
            return Err(fail(format!("body larger than {max_body} bytes")));
        }
        body.extend_from_slice(&response.payload);
        size = block.size().min(size);
        if !block.more {
            return Ok((response, body));
        }
    }
}

/// Every block of one Block2 read must carry the ETag of the first: otherwise the resource
/// changed in the middle and the blocks would mix two representations.
fn check_same_representation(etag: &mut Option<Vec<u8>>, response: &Packet) -> Result<(), String> {
    let this = response.get_first_option(CoapOption::ETag).cloned();
    match (etag.as_ref(), this) {
        (None, this) => {
            *etag = Some(this.unwrap_or_default());
            Ok(())
        }
        (Some(first), this) if this.as_deref().unwrap_or_default() == first.as_slice() => Ok(()),
        _ => Err("the ETag changed between blocks: the resource changed during the read".into()),
    }
}
