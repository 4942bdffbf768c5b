//! The datagram seam under a CoAP endpoint: the [`DatagramSocket`] an endpoint reads and
//! writes, and the [`Network`] that binds one.
//!
//! Production binds real UDP sockets ([`Network::udp`]). Tests bind sockets on an in-process
//! simulated network (fota-impair's `SimNetwork`, with its loss, duplication, reordering,
//! delay, blackouts and NAT rebinding), so the same endpoint, LwM2M server, delivery and
//! campaigns run on tokio's paused clock, deterministically. Owns nothing else.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::UdpSocket;

/// What an I/O operation of the seam returns.
pub type IoFuture<'a, T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send + 'a>>;

/// One bound datagram socket.
pub trait DatagramSocket: Send + Sync + 'static {
    /// The address the socket is bound to.
    fn local_addr(&self) -> SocketAddr;

    /// Sends one datagram, waiting for room if the socket is full.
    fn send_to<'a>(&'a self, datagram: &'a [u8], to: SocketAddr) -> IoFuture<'a, ()>;

    /// Sends one datagram if there is room now; an error otherwise (the datagram is lost, as
    /// on a full UDP socket).
    fn try_send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<()>;

    /// Waits for the next datagram; its length (cut to `buffer`) and sender.
    fn recv_from<'a>(&'a self, buffer: &'a mut [u8]) -> IoFuture<'a, (usize, SocketAddr)>;

    /// The identity `peer` proved on this socket (its DTLS PSK identity), if it proved one.
    fn peer_identity(&self, _peer: SocketAddr) -> Option<Arc<str>> {
        None
    }

    /// The kernel's receive buffer, where there is one.
    fn receive_buffer_size(&self) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "not a kernel socket",
        ))
    }
}

/// Binds datagram sockets on some network.
pub trait Bind: Send + Sync + 'static {
    /// A socket on `addr` (port 0: any free port).
    fn bind(&self, addr: SocketAddr) -> IoFuture<'_, Arc<dyn DatagramSocket>>;

    /// What the network is, for logs.
    fn name(&self) -> &str;
}

/// The network endpoints bind their sockets on. Cheap to clone; two handles are equal when
/// they are the same network.
#[derive(Clone)]
pub struct Network(Arc<dyn Bind>);

/// The one real UDP network.
static UDP: LazyLock<Network> = LazyLock::new(|| Network(Arc::new(Udp)));

impl Network {
    /// Real UDP sockets, each with a large receive buffer.
    pub fn udp() -> Network {
        UDP.clone()
    }

    /// A network of `binder`'s sockets (a simulated one).
    pub fn new(binder: impl Bind) -> Network {
        Network(Arc::new(binder))
    }

    /// A socket on `addr` (port 0: any free port).
    pub async fn bind(&self, addr: SocketAddr) -> io::Result<Arc<dyn DatagramSocket>> {
        self.0.bind(addr).await
    }
}

impl Default for Network {
    fn default() -> Self {
        Network::udp()
    }
}

impl PartialEq for Network {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Network({})", self.0.name())
    }
}

/// Receive buffer asked of the kernel for every socket. Linux's default (about 208 KiB) holds
/// a few hundred small datagrams: a server whose thousands of devices each answer one block at
/// the same moment, or register at once, loses the rest and waits ACK_TIMEOUT for each. The
/// kernel caps the request at `net.core.rmem_max`, which a server host should raise to match.
const RECEIVE_BUFFER: usize = 4 << 20;

/// Real UDP.
struct Udp;

impl Bind for Udp {
    fn bind(&self, addr: SocketAddr) -> IoFuture<'_, Arc<dyn DatagramSocket>> {
        Box::pin(async move {
            let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
            socket.set_recv_buffer_size(RECEIVE_BUFFER)?;
            socket.set_nonblocking(true)?;
            socket.bind(&addr.into())?;
            let socket = UdpSocket::from_std(socket.into())?;
            let local_addr = socket.local_addr()?;
            Ok(Arc::new(UdpDatagrams { socket, local_addr }) as Arc<dyn DatagramSocket>)
        })
    }

    fn name(&self) -> &str {
        "udp"
    }
}

/// A tokio UDP socket.
struct UdpDatagrams {
    socket: UdpSocket,
    local_addr: SocketAddr,
}

impl DatagramSocket for UdpDatagrams {
    fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn send_to<'a>(&'a self, datagram: &'a [u8], to: SocketAddr) -> IoFuture<'a, ()> {
        Box::pin(async move { self.socket.send_to(datagram, to).await.map(drop) })
    }

    fn try_send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        self.socket.try_send_to(datagram, to).map(drop)
    }

    fn recv_from<'a>(&'a self, buffer: &'a mut [u8]) -> IoFuture<'a, (usize, SocketAddr)> {
        Box::pin(self.socket.recv_from(buffer))
    }

    fn receive_buffer_size(&self) -> io::Result<usize> {
        SockRef::from(&self.socket).recv_buffer_size()
    }
}
