//! The device's side of pull delivery: fetching the package named by the Package URI (/5/0/1)
//! with Block2, block by block into the download partition, resuming from the bytes already
//! stored, and checking every block belongs to the same package (ETag).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use coap_lite::{CoapOption, RequestType, ResponseType};
use fota_engine::coap::{BlockOption, OutgoingRequest, Packet, PacketExt};
use fota_engine::lwm2m::firmware::UpdateResult;

use crate::client::{Shared, lock};
use crate::firmware_update::WriteAnswer;
use crate::system::DeviceSystem;

/// Failed requests in a row after which the device gives up (Update Result 4).
const ATTEMPTS_PER_BLOCK: u32 = 4;

/// Where a Package URI points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageLocation {
    /// The server's address.
    pub server: SocketAddr,
    /// Uri-Path segments.
    pub path: Vec<String>,
}

/// Parses `coap://IP:PORT/path...` (this reference device resolves no host names).
pub fn parse_uri(uri: &str) -> Option<PackageLocation> {
    let rest = uri.strip_prefix("coap://")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    Some(PackageLocation {
        server: authority.parse().ok()?,
        path: path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

/// How one fetched block went.
enum Step {
    /// Stored; fetch the next one.
    Next,
    /// The pull is over (package complete, failed, or replaced by another pull).
    Done,
}

impl<S: DeviceSystem> Shared<S> {
    /// Fetches the package of pull `generation` from `location`, starting at the block that
    /// holds byte `from`, until it is complete, fails, or another pull or a reboot replaces it.
    pub(crate) async fn fetch(
        self: Arc<Self>,
        generation: u64,
        location: PackageLocation,
        from: usize,
    ) {
        let block_size = self.config.max_block_size.clamp(16, 1024);
        let mut num = (from / block_size) as u32;
        let mut failures = 0;
        loop {
            if !self.pull_is_current(generation) {
                return;
            }
            let Some(endpoint) = lock(&self.endpoint).clone() else {
                return;
            };
            let Ok(block) = BlockOption::new(num, false, block_size) else {
                return self.give_up(generation, UpdateResult::InvalidUri);
            };
            let mut request = OutgoingRequest::new(RequestType::Get, &location.path);
            request.block2 = Some(block);
            match endpoint.request(location.server, &request).await {
                Ok(response) => {
                    failures = 0;
                    match self.store_block(generation, &response, &mut num) {
                        Step::Next => {}
                        Step::Done => return,
                    }
                }
                Err(error) => {
                    failures += 1;
                    tracing::debug!(%error, num, "package block not fetched");
                    if failures >= ATTEMPTS_PER_BLOCK {
                        return self.give_up(generation, UpdateResult::ConnectionLost);
                    }
                    tokio::time::sleep(Duration::from_millis(100) * failures).await;
                }
            }
        }
    }

    fn pull_is_current(&self, generation: u64) -> bool {
        lock(&self.core).firmware.pull_generation == generation
    }

    /// Stores one Block2 answer; `num` becomes the next block to ask for.
    fn store_block(&self, generation: u64, response: &Packet, num: &mut u32) -> Step {
        let code = response.response_code().unwrap_or(ResponseType::UnKnown);
        if code.is_error() {
            let result = if code == ResponseType::NotFound {
                UpdateResult::InvalidUri
            } else {
                UpdateResult::ConnectionLost
            };
            self.give_up(generation, result);
            return Step::Done;
        }
        let block = response
            .block2()
            .and_then(Result::ok)
            .unwrap_or(BlockOption::new(0, false, 1024).expect("a valid block"));
        let etag = response
            .get_first_option(CoapOption::ETag)
            .cloned()
            .unwrap_or_default();
        let total = response
            .uint_option(CoapOption::Size2)
            .map(|size| size as usize);
        let before = self.watched();
        let mut events = Vec::new();
        let answer = {
            let mut core = lock(&self.core);
            if core.firmware.pull_generation != generation {
                return Step::Done;
            }
            let crate::client::Core {
                system, firmware, ..
            } = &mut *core;
            if !firmware.same_package(system, &etag) {
                // Another package behind the same URI: start over.
                *num = 0;
                return Step::Next;
            }
            firmware.write(
                system,
                block.offset(),
                &response.payload,
                block.more,
                total,
                &mut events,
            )
        };
        self.notify_changes(before);
        self.emit(events);
        match answer {
            WriteAnswer::Continue => {
                *num = block.num + 1;
                Step::Next
            }
            WriteAnswer::Complete | WriteAnswer::TooLarge => Step::Done,
            WriteAnswer::Incomplete(reason) => {
                tracing::debug!(%reason, "fetched block refused");
                self.give_up(generation, UpdateResult::ConnectionLost);
                Step::Done
            }
        }
    }

    /// Ends pull `generation` with `result`, unless another pull replaced it.
    fn give_up(&self, generation: u64, result: UpdateResult) {
        let before = self.watched();
        let mut events = Vec::new();
        {
            let mut core = lock(&self.core);
            if core.firmware.pull_generation != generation {
                return;
            }
            let crate::client::Core {
                system, firmware, ..
            } = &mut *core;
            firmware.abandon_pull(system, result, &mut events);
        }
        self.notify_changes(before);
        self.emit(events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_uris_parse_to_an_address_and_a_path() {
        assert_eq!(
            parse_uri("coap://127.0.0.1:5683/fw/abc"),
            Some(PackageLocation {
                server: "127.0.0.1:5683".parse().unwrap(),
                path: vec!["fw".into(), "abc".into()],
            })
        );
        assert_eq!(parse_uri("http://127.0.0.1/fw"), None);
        assert_eq!(parse_uri("coap://no-port/fw"), None);
    }
}
