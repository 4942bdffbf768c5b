//! `fota bench wire`: bytes the engine puts on the wire per package byte, for each block size
//! and loss rate, against the minimum a CoAP Block1 exchange of that block size needs; and the
//! bytes it receives from the devices.

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use fota_device::fleet::{Fleet, FleetSpec, wait_registered};
use fota_engine::coap::message::encode_uint;
use fota_engine::coap::{BlockOption, TransmissionParams};
use fota_engine::server::{Server, ServerConfig};
use fota_engine::transfer::{Method, TransferReport};
use fota_impair::Impairment;

use super::harness;

/// Options of `fota bench wire`.
#[derive(Args)]
pub struct WireArgs {
    /// Devices per run, each behind its own impaired link.
    #[arg(long, default_value_t = 20)]
    devices: usize,
    /// Block sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "64,128,256,512,1024")]
    block_sizes: Vec<usize>,
    /// Loss rates (each direction) to measure.
    #[arg(long, value_delimiter = ',', default_value = "0,0.2")]
    loss: Vec<f64>,
    /// Package size in KiB.
    #[arg(long, default_value_t = 80)]
    package_kib: usize,
    /// Seed of the links' decisions.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Seconds, not minutes: 3 devices, 256-byte blocks, no loss, an 8 KiB package (overrides
    /// those).
    #[arg(long)]
    quick: bool,
}

/// Measures every block size at every loss rate and prints the table.
pub async fn run(mut args: WireArgs) -> anyhow::Result<()> {
    if args.quick {
        (args.devices, args.block_sizes, args.loss, args.package_kib) =
            (3, vec![256], vec![0.0], 8);
    }
    let pkg = harness::package(args.package_kib)?;
    println!(
        "{} devices, {} byte package; per package byte: every CoAP byte the engine sent each device \
         for its delivery (retransmissions, reads, observations included), and received from it",
        args.devices,
        pkg.len()
    );
    println!(
        "{:>6} {:>6} {:>9} {:>9} {:>9} {:>7} {:>9} {:>9} {:>8}",
        "block", "loss", "wire/B", "minimum", "ideal", "ratio", "recv/B", "resent B", "seconds"
    );
    for &loss in &args.loss {
        for &block_size in &args.block_sizes {
            let (reports, elapsed) = run_wire(&args, &pkg, block_size, loss).await?;
            let failed = reports.iter().filter(|r| !r.outcome.is_success()).count();
            anyhow::ensure!(failed == 0, "{failed} devices were not upgraded");
            let wire: u64 = reports.iter().map(|r| r.wire.wire_sent).sum();
            let received: u64 = reports.iter().map(|r| r.wire.wire_received).sum();
            let resent: u64 = reports.iter().map(|r| r.wire.package_resent).sum();
            let package_bytes = (pkg.len() * reports.len()) as f64;
            let per_byte = wire as f64 / package_bytes;
            let received_per_byte = received as f64 / package_bytes;
            let minimum = minimum_per_byte(pkg.len(), block_size);
            // Stop-and-wait needs the request and its ACK through: 1 / (1 - loss)² tries.
            let ideal = minimum / (1.0 - loss).powi(2);
            println!(
                "{block_size:>6} {loss:>6.2} {per_byte:>9.3} {minimum:>9.3} {ideal:>9.3} {:>7.3} {received_per_byte:>9.3} {resent:>9} {:>8.1}",
                per_byte / ideal,
                elapsed.as_secs_f64()
            );
        }
    }
    Ok(())
}

/// One engine, one fleet behind links losing `loss`, one push of `pkg` to every device.
async fn run_wire(
    args: &WireArgs,
    pkg: &Bytes,
    block_size: usize,
    loss: f64,
) -> anyhow::Result<(Vec<TransferReport>, Duration)> {
    let mut config = ServerConfig::loopback();
    config.coap.params = TransmissionParams {
        ack_timeout: Duration::from_millis(20),
        ..TransmissionParams::fast()
    };
    let server = Server::start(config).await?;
    let mut spec = FleetSpec::uniform(args.devices, server.coap_addr(), harness::model());
    spec.link = Some(Impairment::lossy(loss));
    spec.seed = args.seed;
    let events = server.registry.subscribe();
    let fleet = Fleet::start(&spec).await?;
    let registered = wait_registered(events, fleet.len(), Duration::from_secs(120)).await;
    anyhow::ensure!(registered, "the fleet did not register within two minutes");
    let package = server.shelf.put(pkg.clone());
    let jobs = fleet.jobs(&package, "2.0", block_size, Method::Push);
    let started = Instant::now();
    let reports = server.delivery.run_all(jobs, |_| {}).await;
    Ok((reports, started.elapsed()))
}

/// The fewest bytes per package byte a Block1 upload of `len` bytes to /5/0/0 can put on the
/// wire: each block a confirmable PUT with no token, the three Uri-Path segments, Block1, the
/// payload marker and the payload (Size1 on the first block), sent once.
fn minimum_per_byte(len: usize, block_size: usize) -> f64 {
    let blocks = len.div_ceil(block_size);
    let total: usize = (0..blocks)
        .map(|num| {
            let offset = num * block_size;
            let end = (offset + block_size).min(len);
            let mut packet = Packet::new();
            packet.header.set_type(MessageType::Confirmable);
            packet.header.code = MessageClass::Request(RequestType::Put);
            for segment in ["5", "0", "0"] {
                packet.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
            }
            let block = BlockOption::new(num as u32, end < len, block_size).expect("valid block");
            packet.add_option(CoapOption::Block1, block.encode());
            if num == 0 {
                packet.add_option(CoapOption::Size1, encode_uint(len as u32));
            }
            packet.payload = vec![0; end - offset];
            packet.to_bytes().expect("encodes").len()
        })
        .sum();
    total as f64 / len as f64
}
