//! `DeviceManagement`: the LwM2M device management operations (Read, Write, Execute, Observe,
//! Cancel Observation) as async calls towards a registered device, returning decoded records or
//! a clear error; optionally charging every byte they put on the wire to one account.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use coap_lite::{Packet, RequestType, ResponseType};

use super::content::{self, ContentError, ContentFormat, Record, Value};
use super::path::LwM2mPath;
use crate::coap::blockwise::get_block2;
use crate::coap::message::code_name;
use crate::coap::{CoapError, Endpoint, Observation, OutgoingRequest, PacketExt, WireMeter};

/// Largest representation a Read accepts (a Read is for resources, not packages).
const MAX_READ: usize = 64 * 1024;

/// Why a device management operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ManagementError {
    /// The device did not answer, reset the exchange, or the socket failed.
    #[error(transparent)]
    Coap(#[from] CoapError),
    /// The device answered with an error code.
    #[error("{operation} {path} answered {}", code_name(*code))]
    Status {
        /// "Read", "Write", ...
        operation: &'static str,
        /// The target.
        path: LwM2mPath,
        /// The CoAP response code.
        code: ResponseType,
    },
    /// The payload did not decode.
    #[error("{path}: {source}")]
    Content {
        /// The target.
        path: LwM2mPath,
        /// What was wrong.
        source: ContentError,
    },
    /// The device answered in a content format this server does not know.
    #[error("{path}: unknown content format {number}")]
    UnknownFormat {
        /// The target.
        path: LwM2mPath,
        /// The Content-Format number.
        number: u16,
    },
    /// The device answered without the value asked for.
    #[error("{0}: no value in the response")]
    Missing(LwM2mPath),
}

impl ManagementError {
    /// The response code, when the device answered with an error code.
    pub fn code(&self) -> Option<ResponseType> {
        match self {
            ManagementError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Sends device management requests from the server's endpoint.
#[derive(Clone)]
pub struct DeviceManagement {
    /// The server's CoAP endpoint: requests must leave from the port devices registered to.
    endpoint: Endpoint,
    /// Where the bytes of every operation (and of the notifications of its observations) are
    /// counted: a delivery's wire account. `None`: not counted.
    meter: Option<Arc<WireMeter>>,
    /// Retransmissions each request is limited to, for a device that has not answered the
    /// engine yet; `None`: the endpoint's own.
    max_retransmit: Option<u32>,
}

impl DeviceManagement {
    /// Operations sent from `endpoint`.
    pub fn new(endpoint: Endpoint) -> Self {
        DeviceManagement {
            endpoint,
            meter: None,
            max_retransmit: None,
        }
    }

    /// The same operations, each charged to `meter`: requests and their retransmissions,
    /// responses, and the notifications of observations it starts.
    pub fn metered(&self, meter: Arc<WireMeter>) -> Self {
        DeviceManagement {
            meter: Some(meter),
            ..self.clone()
        }
    }

    /// The same operations towards a device met for the first time (its source may be
    /// forged): each request is retransmitted at most `retransmits` times, so silence costs
    /// a few datagrams and seconds.
    pub fn first_contact(&self, retransmits: u32) -> Self {
        DeviceManagement {
            max_retransmit: Some(retransmits),
            ..self.clone()
        }
    }

    /// One exchange, charged to the meter if there is one.
    async fn request(
        &self,
        device: SocketAddr,
        request: &OutgoingRequest,
    ) -> Result<Packet, CoapError> {
        let limited;
        let request = match self.max_retransmit {
            Some(limit) => {
                limited = OutgoingRequest {
                    max_retransmit: Some(limit),
                    ..request.clone()
                };
                &limited
            }
            None => request,
        };
        match &self.meter {
            Some(meter) => self.endpoint.request_metered(device, request, meter).await,
            None => self.endpoint.request(device, request).await,
        }
    }

    /// The endpoint requests leave from.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Read: every record under `path`.
    pub async fn read(
        &self,
        device: SocketAddr,
        path: LwM2mPath,
    ) -> Result<Vec<Record>, ManagementError> {
        let request = OutgoingRequest::new(RequestType::Get, &path.segments());
        let response = self.read_whole(device, &request).await?;
        expect_success("Read", path, &response)?;
        decode(path, &response)
    }

    /// The answer to `request`, its blocks gathered when the device answers with Block2.
    async fn read_whole(
        &self,
        device: SocketAddr,
        request: &OutgoingRequest,
    ) -> Result<Packet, ManagementError> {
        let mut response = self.request(device, request).await?;
        if response
            .block2()
            .and_then(Result::ok)
            .is_some_and(|b| b.more)
        {
            let unmetered = WireMeter::default();
            let meter = self.meter.as_deref().unwrap_or(&unmetered);
            let (last, body) =
                get_block2(&self.endpoint, device, request, 1024, MAX_READ, meter).await?;
            response = last;
            response.payload = body;
        }
        Ok(response)
    }

    /// Read-Composite (LwM2M 1.1): every record under each of `paths`, in one FETCH whose body
    /// names them, asked and answered in `format` (SenML CBOR or JSON). A device without it
    /// answers an error code (4.05, 4.15, 4.00, ...): the caller reads the paths one by one.
    pub async fn read_composite(
        &self,
        device: SocketAddr,
        paths: &[LwM2mPath],
        format: ContentFormat,
    ) -> Result<Vec<Record>, ManagementError> {
        let root = LwM2mPath::ROOT;
        let body = content::encode_paths(format, paths)
            .map_err(|source| ManagementError::Content { path: root, source })?;
        let mut request = OutgoingRequest::new(RequestType::Fetch, &root.segments())
            .with_payload(format.number(), body);
        request.accept = Some(format.number());
        let response = self.read_whole(device, &request).await?;
        expect_success("Read-Composite", root, &response)?;
        decode(root, &response)
    }

    /// Read of object instance `instance`, or, from a device that refuses to read a whole
    /// instance (LwM2M 1.0 clients that speak only text/plain answer 4.04 or 4.06), of each of
    /// its `resources` one by one, those the device does not have left out.
    pub async fn read_instance(
        &self,
        device: SocketAddr,
        instance: LwM2mPath,
        resources: &[u16],
    ) -> Result<Vec<Record>, ManagementError> {
        match self.read(device, instance).await {
            Err(ManagementError::Status { .. }) => {}
            answered => return answered,
        }
        let mut records = Vec::new();
        for resource in resources.iter().filter_map(|id| instance.child(*id)) {
            match self.read(device, resource).await {
                Ok(found) => records.extend(found),
                Err(ManagementError::Status { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(records)
    }

    /// Read of one resource's value.
    pub async fn read_value(
        &self,
        device: SocketAddr,
        path: LwM2mPath,
    ) -> Result<Value, ManagementError> {
        let records = self.read(device, path).await?;
        records
            .into_iter()
            .find(|r| r.path == path)
            .map(|r| r.value)
            .ok_or(ManagementError::Missing(path))
    }

    /// Write (replace) of one resource with a payload already encoded in `format`.
    pub async fn write(
        &self,
        device: SocketAddr,
        path: LwM2mPath,
        format: ContentFormat,
        payload: impl Into<Bytes>,
    ) -> Result<(), ManagementError> {
        self.send_write(RequestType::Put, device, path, format, payload.into())
            .await
    }

    /// Write (partial update) of object instance `path` with a payload already encoded in
    /// `format`: the resources it carries are replaced, the instance's others kept.
    pub async fn write_update(
        &self,
        device: SocketAddr,
        path: LwM2mPath,
        format: ContentFormat,
        payload: impl Into<Bytes>,
    ) -> Result<(), ManagementError> {
        self.send_write(RequestType::Post, device, path, format, payload.into())
            .await
    }

    /// A Write as `method`: PUT replaces, POST updates.
    async fn send_write(
        &self,
        method: RequestType,
        device: SocketAddr,
        path: LwM2mPath,
        format: ContentFormat,
        payload: Bytes,
    ) -> Result<(), ManagementError> {
        let request =
            OutgoingRequest::new(method, &path.segments()).with_payload(format.number(), payload);
        let response = self.request(device, &request).await?;
        expect_success("Write", path, &response)
    }

    /// Write of one resource's value, encoded as plain text (or opaque for bytes).
    pub async fn write_value(
        &self,
        device: SocketAddr,
        path: LwM2mPath,
        value: Value,
    ) -> Result<(), ManagementError> {
        let format = match value {
            Value::Opaque(_) => ContentFormat::Opaque,
            _ => ContentFormat::TextPlain,
        };
        let payload = content::encode(format, &path, &[Record::new(path, value)])
            .map_err(|source| ManagementError::Content { path, source })?;
        self.write(device, path, format, payload).await
    }

    /// Execute of a resource, with optional arguments.
    pub async fn execute(
        &self,
        device: SocketAddr,
        path: LwM2mPath,
        arguments: Option<&str>,
    ) -> Result<(), ManagementError> {
        let mut request = OutgoingRequest::new(RequestType::Post, &path.segments());
        if let Some(arguments) = arguments {
            request = request.with_payload(
                ContentFormat::TextPlain.number(),
                arguments.as_bytes().to_vec(),
            );
        }
        let response = self.request(device, &request).await?;
        expect_success("Execute", path, &response)
    }

    /// Observe: the current value and, when the device accepts, an observation of changes.
    pub async fn observe(
        &self,
        device: SocketAddr,
        path: LwM2mPath,
    ) -> Result<(Vec<Record>, Option<Observation>), ManagementError> {
        let mut request = OutgoingRequest::new(RequestType::Get, &path.segments());
        request.observe = Some(0);
        let (response, observation) = match &self.meter {
            Some(meter) => {
                self.endpoint
                    .observe_metered(device, &request, meter)
                    .await?
            }
            None => self.endpoint.observe(device, &request).await?,
        };
        expect_success("Observe", path, &response)?;
        Ok((decode(path, &response)?, observation))
    }

    /// Cancel Observation, actively, so the device stops sending notifications.
    pub async fn cancel_observation(
        &self,
        device: SocketAddr,
        path: LwM2mPath,
        observation: Observation,
    ) -> Result<(), ManagementError> {
        let request = OutgoingRequest::new(RequestType::Get, &path.segments());
        let response = self
            .endpoint
            .cancel_observation(device, observation, &request)
            .await?;
        expect_success("Cancel Observation", path, &response)
    }
}

/// The records of a notification of an observation of `path`, or the error it carries.
pub fn notification(path: LwM2mPath, packet: &Packet) -> Result<Vec<Record>, ManagementError> {
    expect_success("Observe", path, packet)?;
    decode(path, packet)
}

/// Decodes a response to a Read, Observe or notification of `path`.
pub fn decode(path: LwM2mPath, response: &Packet) -> Result<Vec<Record>, ManagementError> {
    let number = response
        .content_format_number()
        .unwrap_or(ContentFormat::TextPlain.number());
    let format = ContentFormat::from_number(number)
        .ok_or(ManagementError::UnknownFormat { path, number })?;
    content::decode(format, &path, &response.payload)
        .map_err(|source| ManagementError::Content { path, source })
}

fn expect_success(
    operation: &'static str,
    path: LwM2mPath,
    response: &Packet,
) -> Result<(), ManagementError> {
    match response.response_code() {
        Some(code) if !code.is_error() => Ok(()),
        code => {
            let code = code.unwrap_or(ResponseType::UnKnown);
            tracing::debug!(%path, code = %code_name(code), "{operation} failed");
            Err(ManagementError::Status {
                operation,
                path,
                code,
            })
        }
    }
}
