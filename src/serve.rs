//! `fota serve`: the engine on its CoAP port until SIGINT or SIGTERM.

use std::net::SocketAddr;

use clap::Args;
use fota_engine::lwm2m::RegistrationEvent;
use fota_engine::server::{Server, ServerConfig};

/// Options of `fota serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// UDP address for CoAP.
    #[arg(long, env = "FOTA_COAP_ADDR", default_value = "0.0.0.0:5683")]
    coap_addr: SocketAddr,
}

/// Serves until interrupted, logging registrations.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let server = Server::start(ServerConfig {
        coap_addr: args.coap_addr,
        ..ServerConfig::default()
    })
    .await?;
    eprintln!("fota engine: CoAP on udp://{}", server.coap_addr());
    let mut events = server.registry.subscribe();
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
        }
    }
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
