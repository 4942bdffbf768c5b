//! `PackageShelf`: the packages the engine can deliver, by id, each held once in memory and
//! shared by every transfer; and `PackageServer`, which serves them at their Package URI
//! (`/fw/{token}`, a token of 128 bits derived from the package and a secret, so a URI cannot
//! be guessed) for devices that pull, and only to hosts with a registered device unless
//! configured otherwise. Owns package identity (id, token, sha256, ETag), the count of package blocks
//! that went out (pushed or served), and what was served to a device whose delivery keeps an
//! account ([`PullAccount`]); not where packages come from (the catalog) nor how they reach a
//! device (push, pull).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use coap_lite::{RequestType, ResponseType};
use sha2::{Digest, Sha256};

use crate::coap::block::block2_slice;
use crate::coap::stats::bump;
use crate::coap::{
    Charge, HandlerFuture, IncomingRequest, PacketExt, RequestHandler, Response, WireMeter,
};
use crate::edge::EdgeCounters;
use crate::lwm2m::{ContentFormat, Registry};
use crate::sync::{lock, read, write};

/// First Uri-Path segment of every Package URI.
pub const PACKAGE_PATH: &str = "fw";

/// One deliverable package.
#[derive(Debug, PartialEq, Eq)]
pub struct ShelvedPackage {
    /// Id: the first 16 hex digits of the sha256.
    pub id: String,
    /// The last segment of its Package URI: 32 hex digits of a hash of the package and the
    /// shelf's secret, which nobody without the URI can guess.
    pub token: String,
    /// The bytes every device receives; slices of it go on the wire, never copies of the whole.
    pub bytes: Bytes,
    /// sha256 of `bytes`.
    pub sha256: [u8; 32],
}

impl ShelvedPackage {
    /// Identifies `bytes` by their hash, and gives them a URI token from `secret`.
    fn new(bytes: Bytes, secret: &[u8; 32]) -> Self {
        let sha256: [u8; 32] = Sha256::digest(&bytes).into();
        let token: [u8; 32] = Sha256::new()
            .chain_update(secret)
            .chain_update(sha256)
            .finalize()
            .into();
        ShelvedPackage {
            id: hex::encode(&sha256[..8]),
            token: hex::encode(&token[..16]),
            bytes,
            sha256,
        }
    }

    /// The ETag of every Block2 answer for this package: tied to the hash, so a device
    /// resuming a download never mixes two packages.
    pub fn etag(&self) -> Vec<u8> {
        self.sha256[..8].to_vec()
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True for an empty package (never a valid one).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// `{scheme}://{authority}/fw/{token}`: the URI a pulling device is given (scheme coap,
    /// or coaps for a device on DTLS). `authority` is how devices reach the engine
    /// (host:port), which a server behind NAT cannot guess.
    pub fn uri(&self, scheme: &str, authority: &str) -> String {
        format!("{scheme}://{authority}/{PACKAGE_PATH}/{}", self.token)
    }
}

/// Package bytes served to one device address, for the wire account of a pull.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Served {
    /// Payload bytes of every block served, a block served again to a retransmitted request
    /// not counted (its bytes are on the wire account, not the package's).
    pub bytes: u64,
    /// End of the furthest block served.
    pub high_water: usize,
}

/// What the server sent to one device address of one package, for the delivery that asked.
#[derive(Debug)]
struct Pulled {
    /// The delivery's wire account: every request of this address for the package, and
    /// every answer.
    charge: Charge,
    /// Package bytes served since the delivery last took them.
    served: Served,
    /// Message id of the last request served: the same id again is the device retransmitting
    /// (its ACK was lost), not asking for the block again.
    last_message_id: Option<u16>,
}

/// A delivery's account with the package server for one device address and package: while
/// it lives, what the server sends there is counted for the delivery. Dropping it stops that.
#[derive(Debug)]
pub struct PullAccount {
    /// Where the counts are.
    served: Arc<Mutex<HashMap<PullKey, Pulled>>>,
    /// Which device address and package.
    key: PullKey,
}

/// A device address and a package's sha256.
type PullKey = (SocketAddr, [u8; 32]);

impl PullAccount {
    /// The device address the account is for.
    pub fn peer(&self) -> SocketAddr {
        self.key.0
    }

    /// Package bytes served since the last call (the furthest block stays).
    pub fn take(&self) -> Served {
        let mut served = lock(&self.served);
        let Some(pulled) = served.get_mut(&self.key) else {
            return Served::default();
        };
        let taken = pulled.served;
        pulled.served.bytes = 0;
        taken
    }
}

impl Drop for PullAccount {
    fn drop(&mut self) {
        lock(&self.served).remove(&self.key);
    }
}

/// Package blocks that went out since the engine started, retransmissions not included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockCounts {
    /// Block1 blocks written to devices (push).
    pub pushed: u64,
    /// Their payload bytes.
    pub pushed_bytes: u64,
    /// Block2 blocks served at Package URIs (pull).
    pub served: u64,
    /// Their payload bytes.
    pub served_bytes: u64,
}

/// Packages by id and by URI token, what was served of them to whom, and how many blocks went
/// out. Cheap to clone; every clone sees the same shelf.
#[derive(Debug, Clone, Default)]
pub struct PackageShelf {
    /// The packages, by id.
    packages: Arc<RwLock<HashMap<String, Arc<ShelvedPackage>>>>,
    /// Package ids by URI token.
    tokens: Arc<RwLock<HashMap<String, String>>>,
    /// What URI tokens are derived from.
    secret: [u8; 32],
    /// What was served to the device addresses deliveries keep an account for; nothing for
    /// anyone else (a `coap-client`, a device pulling on its own), so nothing piles up.
    served: Arc<Mutex<HashMap<PullKey, Pulled>>>,
    /// Blocks pushed, their bytes, blocks served, their bytes.
    blocks: Arc<[AtomicU64; 4]>,
}

impl PackageShelf {
    /// An empty shelf whose URI tokens come from a random secret.
    pub fn new() -> Self {
        PackageShelf::with_uri_secret(crate::entropy::random())
    }

    /// An empty shelf whose URI tokens come from `secret`: the same package gets the same
    /// URI every time the engine starts, so a pull survives a restart.
    pub fn with_uri_secret(secret: [u8; 32]) -> Self {
        PackageShelf {
            secret,
            ..PackageShelf::default()
        }
    }

    /// Puts `bytes` on the shelf (once: the same bytes give the same entry).
    pub fn put(&self, bytes: Bytes) -> Arc<ShelvedPackage> {
        let package = ShelvedPackage::new(bytes, &self.secret);
        let mut packages = write(&self.packages);
        let shelved = packages
            .entry(package.id.clone())
            .or_insert_with(|| Arc::new(package))
            .clone();
        let mut tokens = write(&self.tokens);
        tokens.insert(shelved.token.clone(), shelved.id.clone());
        shelved
    }

    /// The package whose URI token is `token`.
    fn by_token(&self, token: &str) -> Option<Arc<ShelvedPackage>> {
        let id = {
            let tokens = read(&self.tokens);
            tokens.get(token)?.clone()
        };
        self.get(&id)
    }

    /// The package with this id.
    pub fn get(&self, id: &str) -> Option<Arc<ShelvedPackage>> {
        let packages = read(&self.packages);
        packages.get(id).cloned()
    }

    /// Takes a package off the shelf; transfers holding it finish with their copy.
    pub fn remove(&self, id: &str) -> Option<Arc<ShelvedPackage>> {
        let mut packages = write(&self.packages);
        let removed = packages.remove(id)?;
        let mut tokens = write(&self.tokens);
        tokens.remove(&removed.token);
        Some(removed)
    }

    /// Counts what the package server sends `peer` of `package` from now on, and charges
    /// the bytes of those exchanges to `meter`, until the account is dropped.
    pub fn account_pulls(
        &self,
        peer: SocketAddr,
        package: &ShelvedPackage,
        meter: Arc<WireMeter>,
    ) -> PullAccount {
        let key = (peer, package.sha256);
        let pulled = Pulled {
            charge: Charge(meter),
            served: Served::default(),
            last_message_id: None,
        };
        lock(&self.served).insert(key, pulled);
        PullAccount {
            served: self.served.clone(),
            key,
        }
    }

    /// Counts a package block written to a device.
    pub fn record_pushed(&self, len: usize) {
        self.blocks[0].fetch_add(1, Ordering::Relaxed);
        self.blocks[1].fetch_add(len as u64, Ordering::Relaxed);
    }

    /// The blocks that went out so far.
    pub fn block_counts(&self) -> BlockCounts {
        let [pushed, pushed_bytes, served, served_bytes] =
            [0, 1, 2, 3].map(|i| self.blocks[i].load(Ordering::Relaxed));
        BlockCounts {
            pushed,
            pushed_bytes,
            served,
            served_bytes,
        }
    }

    /// Counts the bytes `range` of `package` served to a request from `peer` with
    /// `message_id`; the charge of the delivery that keeps an account for them, if any.
    fn record_served(
        &self,
        peer: SocketAddr,
        message_id: u16,
        package: &ShelvedPackage,
        range: std::ops::Range<usize>,
    ) -> Option<Charge> {
        let mut served = lock(&self.served);
        let pulled = served.get_mut(&(peer, package.sha256));
        let again = pulled
            .as_ref()
            .is_some_and(|p| p.last_message_id == Some(message_id));
        if !again && !range.is_empty() {
            self.blocks[2].fetch_add(1, Ordering::Relaxed);
            self.blocks[3].fetch_add(range.len() as u64, Ordering::Relaxed);
        }
        let pulled = pulled?;
        if !again {
            pulled.served.bytes += range.len() as u64;
            pulled.served.high_water = pulled.served.high_water.max(range.end);
        }
        pulled.last_message_id = Some(message_id);
        Some(pulled.charge.clone())
    }
}

/// Answers `GET /fw/{token}` with the package; the endpoint slices it into the Block2 block
/// the device asks for, so a device resumes a download by asking for its next block number.
pub struct PackageServer {
    shelf: PackageShelf,
    /// The endpoint's largest Block2 block: what a larger request is cut to.
    max_block_size: usize,
    /// When set, only a source on a host with a registered device gets package bytes (a
    /// client may fetch from another port than it registered from): anyone else gets 4.01
    /// with no payload, smaller than its request, so the server amplifies nothing for a
    /// forged source.
    registered_only: Option<Arc<Registry>>,
    /// Where refusals are counted.
    counters: Arc<EdgeCounters>,
}

impl PackageServer {
    /// Serves what is on `shelf`, in blocks of at most `max_block_size`, to the devices in
    /// `registered_only` when given (to any source otherwise).
    pub fn new(
        shelf: PackageShelf,
        max_block_size: usize,
        registered_only: Option<Arc<Registry>>,
        counters: Arc<EdgeCounters>,
    ) -> Self {
        PackageServer {
            shelf,
            max_block_size,
            registered_only,
            counters,
        }
    }

    /// Notes the block this request gets, cut as the endpoint cuts it; the charge of the
    /// delivery that accounts for it, if any. A block past the end is no block (the endpoint
    /// answers it with an error) but the exchange is still charged.
    fn count(&self, request: &IncomingRequest, package: &ShelvedPackage) -> Option<Charge> {
        let requested = request.packet.block2().and_then(Result::ok);
        let range = match block2_slice(package.len(), requested, self.max_block_size) {
            Ok(Some((_, range))) => range,
            Ok(None) => 0..package.len(),
            Err(_) => 0..0,
        };
        self.shelf.record_served(
            request.peer,
            request.packet.header.message_id,
            package,
            range,
        )
    }

    fn answer(&self, request: &IncomingRequest) -> Response {
        let path = request.packet.uri_path();
        let [prefix, id] = path.as_slice() else {
            return Response::error(ResponseType::NotFound, "no such resource");
        };
        if prefix != PACKAGE_PATH {
            return Response::error(ResponseType::NotFound, "no such resource");
        }
        if request.packet.request_method() != Some(RequestType::Get) {
            return Response::new(ResponseType::MethodNotAllowed);
        }
        if let Some(registry) = &self.registered_only
            && !registry.is_registered_host(request.peer.ip())
        {
            bump(&self.counters.packages_refused);
            return Response::new(ResponseType::Unauthorized);
        }
        let Some(package) = self.shelf.by_token(id) else {
            return Response::new(ResponseType::NotFound);
        };
        let charge = self.count(request, &package);
        let mut response = Response::content(ContentFormat::Opaque.number(), package.bytes.clone());
        response.etag = Some(package.etag());
        response.charge = charge;
        response
    }
}

impl RequestHandler for PackageServer {
    fn handle(&self, request: IncomingRequest) -> HandlerFuture {
        let response = self.answer(&request);
        Box::pin(async move { response })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_bytes_are_shelved_once_under_their_hash() {
        let shelf = PackageShelf::new();
        let a = shelf.put(Bytes::from_static(b"package one"));
        let again = shelf.put(Bytes::from_static(b"package one"));
        let b = shelf.put(Bytes::from_static(b"package two"));
        assert!(Arc::ptr_eq(&a, &again));
        assert_ne!(a.id, b.id);
        assert_eq!(a.id.len(), 16);
        assert_eq!(shelf.get(&a.id).as_deref(), Some(&*a));
        assert_eq!(
            a.uri("coap", "10.0.0.1:5683"),
            format!("coap://10.0.0.1:5683/fw/{}", a.token)
        );
        assert_eq!(a.token.len(), 32);
        assert_eq!(shelf.by_token(&a.token).as_deref(), Some(&*a));
        let other = PackageShelf::new().put(Bytes::from_static(b"package one"));
        assert_ne!(other.token, a.token, "another secret, another token");
        let same =
            PackageShelf::with_uri_secret(shelf.secret).put(Bytes::from_static(b"package one"));
        assert_eq!(
            same.token, a.token,
            "the same secret, the same URI after a restart"
        );
        assert!(shelf.remove(&a.id).is_some());
        assert!(shelf.get(&a.id).is_none());
    }
}
