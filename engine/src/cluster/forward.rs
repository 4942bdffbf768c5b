//! The HTTP API on a member: each request goes on to the coordinator's API as it came
//! (method, path, headers, the body streamed both ways, so an event stream streams), and its
//! answer comes back; 503 while no coordinator answers (one died, another is taking its
//! place).
//! `/healthz` is answered here, for the load balancer in front of the nodes.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;

use super::members::Membership;
use crate::api::{Problem, ProblemKind};

/// What a member answers on its HTTP address.
pub fn router(membership: Membership) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .fallback(forward)
        .with_state(membership)
}

async fn healthz(State(membership): State<Membership>) -> Response {
    axum::Json(json!({ "status": "ok", "node": membership.node(), "role": "member" }))
        .into_response()
}

async fn forward(State(membership): State<Membership>, request: Request) -> Response {
    let looking = membership.clone();
    let coordinator = tokio::task::spawn_blocking(move || looking.coordinator_api()).await;
    let Ok(Ok(Some(coordinator))) = coordinator else {
        return no_coordinator("no node coordinates the cluster now: try again in a few seconds");
    };
    match pass_on(&coordinator, request).await {
        Ok(answer) => answer,
        Err(error) => {
            tracing::warn!(%coordinator, %error, "the coordinator's API did not answer");
            no_coordinator("the coordinator's API did not answer: try again in a few seconds")
        }
    }
}

/// `request`, sent to the API at `coordinator` (host:port); its answer.
async fn pass_on(coordinator: &str, request: Request) -> Result<Response, BoxError> {
    let stream = TcpStream::connect(coordinator).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "a forwarded API connection ended");
        }
    });
    let answer = sender.send_request(request).await?;
    Ok(answer.map(Body::new))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn no_coordinator(detail: &str) -> Response {
    Problem::new(ProblemKind::NoCoordinator, detail).into_response()
}
