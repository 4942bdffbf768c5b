//! `ThrowawayPostgres`: a PostgreSQL server of its own for a test or a benchmark, from the
//! machine's PostgreSQL programs (Debian's `postgresql` package): a new cluster in a temporary
//! directory, on a free loopback port, stopped and deleted when dropped. PostgreSQL refuses to
//! run as root, so under root the cluster belongs to the `postgres` user (or `nobody`) and its
//! programs run as that user.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest the server may take to start or to stop.
const BOUND: Duration = Duration::from_secs(60);

/// The superuser the cluster is made with; loopback connections are trusted.
const USER: &str = "fota";

/// A running throwaway server.
pub struct ThrowawayPostgres {
    dir: PathBuf,
    server: Child,
    port: u16,
}

impl ThrowawayPostgres {
    /// A server for a test, or `None` (the reason printed) when the machine has no PostgreSQL;
    /// with `FOTA_REQUIRE_POSTGRES` set (CI), a missing PostgreSQL fails the test instead.
    pub fn for_test() -> Option<ThrowawayPostgres> {
        match ThrowawayPostgres::start() {
            Ok(server) => Some(server),
            Err(why) if std::env::var_os("FOTA_REQUIRE_POSTGRES").is_none() => {
                eprintln!("skipped: no throwaway PostgreSQL: {why}");
                None
            }
            Err(why) => panic!("FOTA_REQUIRE_POSTGRES is set and PostgreSQL did not start: {why}"),
        }
    }

    /// Makes a cluster in a new temporary directory and starts its server; says why not when
    /// the programs are missing or the server does not come up.
    pub fn start() -> Result<ThrowawayPostgres, String> {
        let bin = server_programs()?;
        let dir = std::env::temp_dir().join(format!(
            "fota-postgres-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).map_err(|error| format!("{}: {error}", dir.display()))?;
        let owner = Owner::for_server()?;
        owner.chown(&dir)?;
        let data = dir.join("data");
        let initdb = owner
            .command(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-U", USER, "-A", "trust", "-E", "UTF8", "--no-sync"])
            .output()
            .map_err(|error| format!("initdb: {error}"))?;
        if !initdb.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&initdb.stderr)
            ));
        }
        let port = free_port()?;
        let log = dir.join("server.log");
        let log_file = std::fs::File::create(&log).map_err(|error| error.to_string())?;
        owner.chown(&log)?;
        let server = owner
            .command(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&dir)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "max_connections=200"])
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|error| format!("postgres: {error}"))?;
        let mut throwaway = ThrowawayPostgres { dir, server, port };
        throwaway.wait_ready(&log)?;
        Ok(throwaway)
    }

    /// The URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Ends every session holding an advisory lock on the database at `url` (an engine's
    /// hold on it), as a network cut or a server restart would; how many it ended.
    pub fn end_lock_holders(url: &str) -> Result<usize, String> {
        let ended = with_client(url, |client| {
            client.query(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[],
            )
        })?;
        Ok(ended.len())
    }

    /// Creates the database `name` (empty) and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        let statement = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        with_client(&self.url("postgres"), move |client| {
            client.batch_execute(&statement)
        })?;
        Ok(self.url(name))
    }

    /// Waits for the server's log to say it accepts connections.
    fn wait_ready(&mut self, log: &Path) -> Result<(), String> {
        let deadline = Instant::now() + BOUND;
        loop {
            let logged = std::fs::read_to_string(log).unwrap_or_default();
            if logged.contains("ready to accept connections") {
                return Ok(());
            }
            if let Ok(Some(status)) = self.server.try_wait() {
                return Err(format!("the server exited ({status}): {logged}"));
            }
            if Instant::now() > deadline {
                return Err(format!("the server did not start in {BOUND:?}: {logged}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs `work` with a client of the database at `url`, on a thread of its own: the client runs
/// a runtime of its own, never on a thread already inside the engine's.
fn with_client<T: Send + 'static>(
    url: &str,
    work: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error> + Send + 'static,
) -> Result<T, String> {
    let url = url.to_string();
    std::thread::spawn(move || {
        let mut client =
            postgres::Client::connect(&url, postgres::NoTls).map_err(|error| error.to_string())?;
        work(&mut client).map_err(|error| error.to_string())
    })
    .join()
    .map_err(|_| "the client's thread panicked".to_string())?
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        // SIGINT: PostgreSQL's fast shutdown (ends sessions, no checkpoint wait for clients).
        unsafe {
            libc::kill(self.server.id() as libc::pid_t, libc::SIGINT);
        }
        let deadline = Instant::now() + BOUND;
        while matches!(self.server.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The directory of PostgreSQL's server programs: `pg_config --bindir`, else the newest of
/// Debian's `/usr/lib/postgresql/<version>/bin`.
fn server_programs() -> Result<PathBuf, String> {
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let bin = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if bin.join("initdb").exists() && bin.join("postgres").exists() {
            return Ok(bin);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "PostgreSQL's server programs are not installed (initdb, postgres)")?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "PostgreSQL's server programs are not installed (initdb, postgres)".into())
}

/// Who the cluster belongs to: this process's user, or under root an unprivileged one.
struct Owner {
    ids: Option<(u32, u32)>,
}

impl Owner {
    fn for_server() -> Result<Owner, String> {
        if unsafe { libc::geteuid() } != 0 {
            return Ok(Owner { ids: None });
        }
        ["postgres", "nobody"]
            .iter()
            .find_map(|name| user_ids(name))
            .map(|ids| Owner { ids: Some(ids) })
            .ok_or_else(|| "running as root, with neither a postgres nor a nobody user".into())
    }

    fn chown(&self, path: &Path) -> Result<(), String> {
        match self.ids {
            Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(|error| format!("chown {}: {error}", path.display())),
            None => Ok(()),
        }
    }

    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        if let Some((uid, gid)) = self.ids {
            command.uid(uid).gid(gid);
        }
        command
    }
}

/// The user and group ids of the user `name`, from /etc/passwd.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let mut passwd = String::new();
    std::fs::File::open("/etc/passwd")
        .ok()?
        .read_to_string(&mut passwd)
        .ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&name) && fields.len() > 3)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    })
}

/// A loopback port nothing listens on now.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|error| format!("no free port: {error}"))
}
