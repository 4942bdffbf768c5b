//! `fota serve`: the platform (CoAP engine, store, plugins, catalog, tasks) until SIGINT or
//! SIGTERM. Tasks and deliveries under way when it stops (or is killed) resume at the next
//! start on the same data directory.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use fota_engine::campaign::CampaignEvent;
use fota_engine::campaign::task::status_name;
use fota_engine::lwm2m::RegistrationEvent;
use fota_engine::platform::{Platform, PlatformConfig};
use fota_engine::plugin::HostConfig;
use fota_engine::server::ServerConfig;

/// Options of `fota serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// UDP address for CoAP.
    #[arg(long, env = "FOTA_COAP_ADDR", default_value = "0.0.0.0:5683")]
    coap_addr: SocketAddr,
    /// Where the store lives.
    #[arg(long, env = "FOTA_DATA_DIR", default_value = "./fota-data")]
    data_dir: PathBuf,
    /// CoAP timers for a loopback test bed (ACK timeout 60 ms) instead of NB-IoT's (3 s).
    #[arg(long)]
    loopback_timers: bool,
}

/// Serves until interrupted, logging registrations.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut server = if args.loopback_timers {
        ServerConfig::loopback()
    } else {
        ServerConfig::default()
    };
    server.coap_addr = args.coap_addr;
    let platform = Platform::start(PlatformConfig {
        server,
        data_dir: Some(args.data_dir.clone()),
        plugins: HostConfig::default(),
    })
    .await?;
    eprintln!(
        "fota engine: CoAP on udp://{}, data in {}",
        platform.server.coap_addr(),
        args.data_dir.display()
    );
    let mut events = platform.server.registry.subscribe();
    let mut tasks = platform.campaigns.subscribe();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            event = events.recv() => {
                if let Ok(event) = event {
                    log_event(&event);
                }
            }
            event = tasks.recv() => {
                if let Ok(CampaignEvent::Task(task)) = event {
                    eprintln!("fota engine: task {} is {}", task.id, status_name(task.status));
                }
            }
        }
    }
    platform.store.flush()?;
    eprintln!("fota engine: stopped");
    Ok(())
}

fn log_event(event: &RegistrationEvent) {
    let registration = event.registration();
    let what = match event {
        RegistrationEvent::Registered(_) => "registered",
        RegistrationEvent::Updated(_) => "updated",
        RegistrationEvent::Deregistered(_) => "de-registered",
        RegistrationEvent::Expired(_) => "expired",
    };
    tracing::info!(endpoint = %registration.endpoint, address = %registration.address, "{what}");
}
