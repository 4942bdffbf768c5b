//! A webhook receiver as an integrator runs one: a small HTTP/1.1 server on loopback that
//! keeps every delivery it is sent (its body and signature), answers the first ones it is
//! told to fail with 500, and can go down (its port closed) and come back on the same port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// One request the receiver was sent.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The body, as received.
    pub body: Vec<u8>,
    /// The `Fota-Signature` header.
    pub signature: String,
    /// The status it was answered.
    pub answered: u16,
}

impl Delivery {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// The event's id.
    pub fn id(&self) -> u64 {
        self.json()["id"].as_u64().expect("an id")
    }
}

/// What the receiver keeps.
#[derive(Default)]
struct Log {
    /// Requests still to fail with 500.
    to_fail: usize,
    /// Every request, in the order received.
    deliveries: Vec<Delivery>,
}

/// A running receiver.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    /// Set to stop accepting.
    stopping: Arc<AtomicBool>,
    accepting: Option<JoinHandle<()>>,
}

impl Receiver {
    /// A receiver on a free loopback port that fails its first `fail_first` requests.
    pub fn start(fail_first: usize) -> Receiver {
        let log = Arc::new(Mutex::new(Log {
            to_fail: fail_first,
            deliveries: Vec::new(),
        }));
        Receiver::listen("127.0.0.1:0".parse().unwrap(), log)
    }

    fn listen(addr: SocketAddr, log: Arc<Mutex<Log>>) -> Receiver {
        let listener = TcpListener::bind(addr).expect("the receiver binds");
        let addr = listener.local_addr().unwrap();
        let stopping = Arc::new(AtomicBool::new(false));
        let accepting = std::thread::spawn({
            let (log, stopping) = (log.clone(), stopping.clone());
            move || accept(listener, &log, &stopping)
        });
        Receiver {
            addr,
            log,
            stopping,
            accepting: Some(accepting),
        }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// Closes its port: connections are refused until [`Receiver::restart`].
    pub fn stop(&mut self) {
        let Some(accepting) = self.accepting.take() else {
            return;
        };
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accepting thread
        accepting.join().unwrap();
    }

    /// Listens again on the same port (after [`Receiver::stop`]), keeping what it received.
    pub fn restart(mut self) -> Receiver {
        self.stop();
        Receiver::listen(self.addr, self.log.clone())
    }

    /// Every request received so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.log.lock().unwrap().deliveries.clone()
    }

    /// Waits up to `bound` until `done` holds of the deliveries received.
    pub fn wait_for(&self, what: &str, bound: Duration, done: impl Fn(&[Delivery]) -> bool) {
        let deadline = Instant::now() + bound;
        while !done(&self.deliveries()) {
            assert!(Instant::now() < deadline, "{what}: not within {bound:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves connections one at a time until `stopping` is set.
fn accept(listener: TcpListener, log: &Mutex<Log>, stopping: &AtomicBool) {
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(stream) = stream {
            let _ = serve(stream, log);
        }
    }
}

/// Reads one request, keeps it and answers it; the connection closes after.
fn serve(stream: TcpStream, log: &Mutex<Log>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let (mut length, mut signature) = (0, String::new());
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "fota-signature" => signature = value.trim().to_string(),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let answered = {
        let mut log = log.lock().unwrap();
        let answered = if log.to_fail > 0 {
            log.to_fail -= 1;
            500
        } else {
            200
        };
        log.deliveries.push(Delivery {
            body,
            signature,
            answered,
        });
        answered
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {answered} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    stream.flush()
}
