//! Client programs a user brings to `fota bench stock` (`--client-cmd`): one command line run N
//! times through `sh -c`, each with its placeholders filled in, in a process group of its own
//! with its output in a log file, and every group killed when the clients are dropped (an
//! error, the end of the run, ctrl-c). Owns the processes only; the bench decides what they
//! must do.
//!
//! Placeholders: `{host}` and `{port}` (where to register: the cell's client-facing address),
//! `{endpoint}` (an endpoint name of its own), `{index}` (0 to N-1), `{dir}` (a fresh empty
//! directory of its own, its output beside it in `<dir>.log`) and `{image}` (the image file the bench
//! delivers). Their values hold no spaces or shell metacharacters, so they need no quoting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use anyhow::Context;
use fota_device::fleet::endpoint_name;
use tokio::process::{Child, Command};

/// Lines of a client's log shown when it fails.
const SHOWN_LINES: usize = 20;

/// What fills one client's placeholders.
struct Placeholders<'a> {
    /// The cell's client-facing address.
    server: SocketAddr,
    /// The client's endpoint name.
    endpoint: &'a str,
    /// Its number.
    index: usize,
    /// Its own directory.
    dir: &'a Path,
    /// The image the bench delivers.
    image: &'a Path,
}

impl Placeholders<'_> {
    /// `template` with every placeholder replaced.
    fn fill(&self, template: &str) -> String {
        template
            .replace("{host}", &self.server.ip().to_string())
            .replace("{port}", &self.server.port().to_string())
            .replace("{endpoint}", self.endpoint)
            .replace("{index}", &self.index.to_string())
            .replace("{dir}", &self.dir.display().to_string())
            .replace("{image}", &self.image.display().to_string())
    }
}

/// One running client.
struct Client {
    /// The endpoint name it was given.
    endpoint: String,
    /// Its directory, removed on drop.
    dir: PathBuf,
    /// The `sh` that runs its command, leader of the client's process group.
    child: Child,
}

/// The running clients; dropping them kills every one's process group.
pub struct ClientProcesses {
    clients: Vec<Client>,
}

impl ClientProcesses {
    /// Starts `count` clients of `template`, registering to `server`, given `image`.
    pub fn start(
        template: &str,
        count: usize,
        server: SocketAddr,
        image: &Path,
    ) -> anyhow::Result<ClientProcesses> {
        let mut processes = ClientProcesses {
            clients: Vec::with_capacity(count),
        };
        for index in 0..count {
            let endpoint = endpoint_name(index);
            let dir = std::env::temp_dir()
                .join(format!("fota-bench-stock-{}-{index}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let placeholders = Placeholders {
                server,
                endpoint: &endpoint,
                index,
                dir: &dir,
                image,
            };
            let child = spawn(&placeholders.fill(template), &dir)?;
            processes.clients.push(Client {
                endpoint,
                dir,
                child,
            });
        }
        Ok(processes)
    }

    /// Resolves when a client's command ends (they are to run until killed), with what it
    /// said last.
    pub async fn first_exit(&mut self) -> anyhow::Error {
        if self.clients.is_empty() {
            return std::future::pending().await;
        }
        let waits = self
            .clients
            .iter_mut()
            .map(|client| Box::pin(client.child.wait()));
        let (status, index, _) = futures_util::future::select_all(waits).await;
        let client = &self.clients[index];
        anyhow::anyhow!(
            "client {index} ({}) ended ({}); the end of {}:\n{}",
            client.endpoint,
            status.map_or_else(|e| e.to_string(), |s: ExitStatus| s.to_string()),
            log_path(&client.dir).display(),
            log_tail(&client.dir)
        )
    }
}

impl Drop for ClientProcesses {
    fn drop(&mut self) {
        for client in &mut self.clients {
            if let Some(pid) = client.child.id() {
                // The group the client's `sh` leads: the command and whatever it started.
                // SAFETY: kill(2) with a negative pid signals that process group only.
                unsafe {
                    libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
                }
            }
            let _ = client.child.start_kill();
            let _ = std::fs::remove_dir_all(&client.dir);
            let _ = std::fs::remove_file(log_path(&client.dir));
        }
    }
}

/// Runs `command` through `sh -c` in a new process group, in the bench's working directory
/// (relative paths in the command work as typed), its output to `dir`'s log.
fn spawn(command: &str, dir: &Path) -> anyhow::Result<Child> {
    let log = std::fs::File::create(log_path(dir))?;
    Command::new("sh")
        .args(["-c", command])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting `sh -c {command}`"))
}

/// A client's output, beside its directory so that starts empty.
fn log_path(dir: &Path) -> PathBuf {
    dir.with_extension("log")
}

/// The last lines a client wrote.
fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(log_path(dir)).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(SHOWN_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_filled() {
        let placeholders = Placeholders {
            server: "127.0.0.1:40000".parse().unwrap(),
            endpoint: "urn:imei:860000000000003",
            index: 3,
            dir: Path::new("/tmp/c3"),
            image: Path::new("/tmp/image.bin"),
        };
        let template = "dev --server {host}:{port} --ep {endpoint} -n {index} --dir {dir} {image}";
        assert_eq!(
            placeholders.fill(template),
            "dev --server 127.0.0.1:40000 --ep urn:imei:860000000000003 -n 3 --dir /tmp/c3 \
             /tmp/image.bin"
        );
    }
}
