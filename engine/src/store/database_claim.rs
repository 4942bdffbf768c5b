//! One engine per PostgreSQL database, until several nodes can share one (issue 23; until then
//! each would run every task over every device). An engine's store holds a session-level
//! advisory lock on a connection of its own for as long as it is open; a second engine on the
//! same database is refused with a clear error, as sled refuses a second process on its
//! directory. An engine that dies loses its lock as soon as the server sees its connection
//! close; one starting in its place waits for that, a few seconds at most.

use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};

use super::postgres_store::database;
use super::{HoldLost, StoreError};

/// The advisory lock an engine holds on its database ("fotaengn" in ASCII; the migrations'
/// lock is another).
const ENGINE_LOCK: i64 = 0x666f_7461_656e_676e;

/// How often a claim looks again while another engine holds the database.
const LOOK_AGAIN: Duration = Duration::from_millis(100);

/// How often a held claim checks that its connection (and so the lock) is still there.
const CHECK: Duration = Duration::from_secs(1);

/// How long that check waits for the database.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// The database, held by this engine until dropped.
pub(crate) struct DatabaseClaim {
    /// Dropped to let the holder go.
    release: Option<mpsc::Sender<()>>,
    /// The thread holding the lock's connection.
    holder: Option<JoinHandle<()>>,
    /// Turns true if the lock's connection is lost: the lock went with it, and another engine
    /// may take the database.
    lost: HoldLost,
}

impl DatabaseClaim {
    /// Takes the database at `config`, waiting up to `wait` for another engine to let it go.
    pub(crate) fn take(config: postgres::Config, wait: Duration) -> Result<Self, StoreError> {
        let (claimed, outcome) = mpsc::sync_channel(1);
        let (release, released) = mpsc::channel::<()>();
        let (lose, lost) = tokio::sync::watch::channel(false);
        // A thread of its own: the `postgres` client runs a runtime, never inside the engine's.
        let holder = thread::Builder::new()
            .name("fota-postgres-claim".into())
            .spawn(move || match lock(&config, wait) {
                Ok(client) => {
                    let _ = claimed.send(Ok(()));
                    hold(client, &released, &lose);
                }
                Err(error) => {
                    let _ = claimed.send(Err(error));
                }
            })
            .map_err(|error| StoreError::Io(format!("no claim thread: {error}")))?;
        let taken = outcome
            .recv()
            .unwrap_or_else(|_| Err(StoreError::Io("the claim thread ended".into())));
        let claim = DatabaseClaim {
            release: Some(release),
            holder: Some(holder),
            lost,
        };
        taken.map(|()| claim)
    }

    /// Turns true if the lock is lost with its connection (a network cut, the server
    /// restarted, the session terminated).
    pub(crate) fn lost(&self) -> HoldLost {
        self.lost.clone()
    }
}

/// Holds `client`'s lock until the claim is dropped (`released` then disconnects), checking
/// every [`CHECK`] that the connection lives; says on `lose` when it does not.
fn hold(
    mut client: Client,
    released: &mpsc::Receiver<()>,
    lose: &tokio::sync::watch::Sender<bool>,
) {
    loop {
        match released.recv_timeout(CHECK) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if client.is_valid(CHECK_TIMEOUT).is_err() {
            tracing::error!("the connection holding the database's lock is lost");
            let _ = lose.send(true);
            return;
        }
    }
}

impl Drop for DatabaseClaim {
    fn drop(&mut self) {
        self.release = None;
        if let Some(holder) = self.holder.take() {
            let _ = holder.join();
        }
    }
}

/// A connection holding the engine's lock, taken within `wait`.
fn lock(config: &postgres::Config, wait: Duration) -> Result<Client, StoreError> {
    let mut client = config.connect(NoTls).map_err(database)?;
    let give_up = Instant::now().checked_add(wait);
    loop {
        let row = (client.query_one("SELECT pg_try_advisory_lock($1)", &[&ENGINE_LOCK]))
            .map_err(database)?;
        if row.get::<_, bool>(0) {
            return Ok(client);
        }
        if give_up.is_some_and(|give_up| Instant::now() >= give_up) {
            return Err(StoreError::Held { waited: wait });
        }
        thread::sleep(LOOK_AGAIN);
    }
}
