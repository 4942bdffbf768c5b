//! `PackageShelf`: the packages the engine can deliver, by id, each held once in memory and
//! shared by every transfer; and `PackageServer`, which serves them at their Package URI
//! (`/fw/{id}`) for devices that pull. Owns package identity (id, sha256, ETag) and the count
//! of package blocks that went out (pushed or served); not where packages come from (the
//! catalog) nor how they reach a device (push, pull).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use coap_lite::{RequestType, ResponseType};
use sha2::{Digest, Sha256};

use crate::coap::{HandlerFuture, IncomingRequest, PacketExt, RequestHandler, Response};
use crate::lwm2m::ContentFormat;

/// First Uri-Path segment of every Package URI.
pub const PACKAGE_PATH: &str = "fw";

/// One deliverable package.
#[derive(Debug, PartialEq, Eq)]
pub struct ShelvedPackage {
    /// Id in the Package URI: the first 16 hex digits of the sha256.
    pub id: String,
    /// The bytes every device receives; slices of it go on the wire, never copies of the whole.
    pub bytes: Bytes,
    /// sha256 of `bytes`.
    pub sha256: [u8; 32],
}

impl ShelvedPackage {
    /// Identifies `bytes` by their hash.
    pub fn new(bytes: Bytes) -> Self {
        let sha256: [u8; 32] = Sha256::digest(&bytes).into();
        ShelvedPackage {
            id: hex::encode(&sha256[..8]),
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

    /// `coap://{authority}/fw/{id}`: the URI a pulling device is given. `authority` is how
    /// devices reach the engine (host:port), which a server behind NAT cannot guess.
    pub fn uri(&self, authority: &str) -> String {
        format!("coap://{authority}/{PACKAGE_PATH}/{}", self.id)
    }
}

/// Package bytes served to one device address, for the wire account of a pull.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Served {
    /// Payload bytes of every block served.
    pub bytes: u64,
    /// End of the furthest block served.
    pub high_water: usize,
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

/// Packages by id, what was served of them to whom, and how many blocks went out. Cheap to
/// clone; every clone sees the same shelf.
#[derive(Debug, Clone, Default)]
pub struct PackageShelf {
    packages: Arc<RwLock<HashMap<String, Arc<ShelvedPackage>>>>,
    served: Arc<Mutex<HashMap<(SocketAddr, String), Served>>>,
    blocks: Arc<[AtomicU64; 4]>,
}

impl PackageShelf {
    /// An empty shelf.
    pub fn new() -> Self {
        PackageShelf::default()
    }

    /// Puts `bytes` on the shelf (once: the same bytes give the same entry).
    pub fn put(&self, bytes: Bytes) -> Arc<ShelvedPackage> {
        let package = ShelvedPackage::new(bytes);
        let mut packages = self.packages.write().unwrap_or_else(|e| e.into_inner());
        packages
            .entry(package.id.clone())
            .or_insert_with(|| Arc::new(package))
            .clone()
    }

    /// The package with this id.
    pub fn get(&self, id: &str) -> Option<Arc<ShelvedPackage>> {
        let packages = self.packages.read().unwrap_or_else(|e| e.into_inner());
        packages.get(id).cloned()
    }

    /// Takes a package off the shelf; transfers holding it finish with their copy.
    pub fn remove(&self, id: &str) -> Option<Arc<ShelvedPackage>> {
        let mut packages = self.packages.write().unwrap_or_else(|e| e.into_inner());
        packages.remove(id)
    }

    /// What was served of package `id` to `peer` since the last call, forgotten now.
    pub fn take_served(&self, peer: SocketAddr, id: &str) -> Served {
        let mut served = self.served.lock().unwrap_or_else(|e| e.into_inner());
        served.remove(&(peer, id.to_string())).unwrap_or_default()
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

    fn record_served(&self, peer: SocketAddr, id: &str, offset: usize, len: usize) {
        self.blocks[2].fetch_add(1, Ordering::Relaxed);
        self.blocks[3].fetch_add(len as u64, Ordering::Relaxed);
        let mut served = self.served.lock().unwrap_or_else(|e| e.into_inner());
        let entry = served.entry((peer, id.to_string())).or_default();
        entry.bytes += len as u64;
        entry.high_water = entry.high_water.max(offset + len);
    }
}

/// Answers `GET /fw/{id}` with the package; the endpoint slices it into the Block2 block the
/// device asks for, so a device resumes a download by asking for its next block number.
pub struct PackageServer {
    shelf: PackageShelf,
    /// The endpoint's largest Block2 block: what a larger request is cut to.
    max_block_size: usize,
}

impl PackageServer {
    /// Serves what is on `shelf`, in blocks of at most `max_block_size`.
    pub fn new(shelf: PackageShelf, max_block_size: usize) -> Self {
        PackageServer {
            shelf,
            max_block_size,
        }
    }

    /// Notes the block this request gets (the endpoint cuts it the same way).
    fn count(&self, request: &IncomingRequest, package: &ShelvedPackage) {
        let requested = request.packet.block2().and_then(Result::ok);
        let size = requested
            .map_or(self.max_block_size, |b| b.size())
            .min(self.max_block_size);
        let offset = requested.map_or(0, |b| b.num as usize * size);
        let len = size.min(package.len().saturating_sub(offset));
        self.shelf
            .record_served(request.peer, &package.id, offset, len);
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
            return Response::error(ResponseType::MethodNotAllowed, "packages are read-only");
        }
        let Some(package) = self.shelf.get(id) else {
            return Response::error(ResponseType::NotFound, format!("no package {id}"));
        };
        self.count(request, &package);
        let mut response = Response::content(ContentFormat::Opaque.number(), package.bytes.clone());
        response.etag = Some(package.etag());
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
            a.uri("10.0.0.1:5683"),
            format!("coap://10.0.0.1:5683/fw/{}", a.id)
        );
        assert!(shelf.remove(&a.id).is_some());
        assert!(shelf.get(&a.id).is_none());
    }
}
