//! `PostgresStore`: the store on a PostgreSQL database, which several engine nodes can share.
//! It keeps the same records under the same keys as sled, in one table of `(key, value)` whose
//! keys are `bytea` (byte order, as sled's). Opening it runs the schema migrations under
//! `engine/migrations/postgres/` (once, under an advisory lock, whichever node comes first),
//! then checks the records' format version as sled's store does.
//!
//! The [`Store`] trait is synchronous and the engine calls it from its tokio tasks, so the
//! database is reached through a few connection threads of its own (the `postgres` client,
//! which runs its own small runtime per connection and must not run inside the engine's): a
//! call hands its query to a free connection and waits for the answer. A connection that
//! breaks is made again and the query tried once more (every query here may be repeated: a
//! batch sets and removes keys, it adds nothing). `apply` commits without waiting for the WAL
//! to reach disk (`synchronous_commit = off`), as sled's batches wait for its flusher; `flush`
//! commits a transaction that waits, which makes every earlier commit durable with it.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::{Client, NoTls, Statement};

use super::database_claim::DatabaseClaim;
use super::{Batch, HoldLost, Store, StoreError};

/// The schema's migrations, in order: `(version, name, SQL)`.
const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "records",
    include_str!("../../migrations/postgres/0001_records.sql"),
)];

/// The advisory lock nodes take to migrate one at a time ("fota" in ASCII).
const MIGRATION_LOCK: i64 = 0x666f_7461;

/// Connections each store keeps: the engine's calls wait on one another beyond this many.
pub const DEFAULT_CONNECTIONS: usize = 4;

/// Longest a query may run before the database cancels it (a stuck call would hold an engine
/// thread).
const STATEMENT_TIMEOUT: &str = "30s";

/// Longest a connection may take to open, unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A query handed to a connection thread.
type Job = Box<dyn FnOnce(&mut Link) + Send>;

/// A database held by this process, not by a store of it ([`PostgresStore::wait_to_hold`]).
pub struct DatabaseHeld {
    claim: DatabaseClaim,
}

impl DatabaseHeld {
    /// Turns true if the hold is lost with its connection.
    pub fn lost(&self) -> HoldLost {
        self.claim.lost()
    }
}

/// A PostgreSQL database reached through a few connections.
pub struct PostgresStore {
    jobs: Option<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    /// The database, held for this engine alone ([`PostgresStore::open_held`]).
    claim: Option<DatabaseClaim>,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`, or
    /// libpq's `key=value` form) with `connections` connections, migrates its schema and checks
    /// the records' format.
    pub fn open(url: &str, connections: usize) -> Result<PostgresStore, StoreError> {
        PostgresStore::open_with(config_of(url)?, connections, None)
    }

    /// Like [`PostgresStore::open`], for one engine alone: another engine on the database is
    /// refused, once it held it for `wait` more ([`DatabaseClaim`]).
    pub fn open_held(
        url: &str,
        connections: usize,
        wait: Duration,
    ) -> Result<PostgresStore, StoreError> {
        let config = config_of(url)?;
        let claim = DatabaseClaim::take(config.clone(), wait)?;
        PostgresStore::open_with(config, connections, Some(claim))
    }

    /// For a store opened by [`PostgresStore::open_held`]: turns true if the hold is lost
    /// with its connection.
    pub fn hold_lost(&self) -> Option<HoldLost> {
        self.claim.as_ref().map(DatabaseClaim::lost)
    }

    /// Waits for no engine to hold the database at `url` (a cluster's coordinator died),
    /// then holds it until the claim is dropped (or this process ends): of the members
    /// waiting so, one takes the coordinator's place.
    pub fn wait_to_hold(url: &str) -> Result<DatabaseHeld, StoreError> {
        let claim = DatabaseClaim::take(config_of(url)?, Duration::MAX)?;
        Ok(DatabaseHeld { claim })
    }

    fn open_with(
        config: postgres::Config,
        connections: usize,
        claim: Option<DatabaseClaim>,
    ) -> Result<PostgresStore, StoreError> {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let threads = (0..connections.max(1))
            .map(|index| {
                let receiver = receiver.clone();
                let config = config.clone();
                std::thread::Builder::new()
                    .name(format!("fota-postgres-{index}"))
                    .spawn(move || serve_jobs(config, &receiver))
                    .map_err(|error| StoreError::Io(format!("no connection thread: {error}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let store = PostgresStore {
            jobs: Some(sender),
            threads,
            claim,
        };
        store.call(migrate)??;
        super::check_format(&store)?;
        Ok(store)
    }

    /// Runs `work` on a free connection and waits for its answer.
    fn call<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Link) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let (answer, answered) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |link| {
            let _ = answer.send(work(link));
        });
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(job).ok())
            .ok_or_else(|| StoreError::Io("the store's connections are closed".into()))?;
        answered
            .recv()
            .map_err(|_| StoreError::Io("a store connection stopped mid-query".into()))
    }

    /// Runs the query `sql` with `params` and returns its rows as `(key, value)`.
    fn rows(&self, sql: &'static str, params: Vec<Param>) -> Result<Vec<Row>, StoreError> {
        self.call(move |link| {
            link.query(sql, &params).map(|rows| {
                rows.into_iter()
                    .map(|row| {
                        let key: Vec<u8> = row.get(0);
                        (String::from_utf8_lossy(&key).into_owned(), row.get(1))
                    })
                    .collect()
            })
        })?
    }
}

type Row = (String, Vec<u8>);

/// A key and the value to set it to.
type Put = (Vec<u8>, Vec<u8>);

/// A query's parameter.
type Param = Box<dyn postgres::types::ToSql + Send + Sync>;

/// `bytes` as a parameter (a key: `bytea`).
fn bytes(bytes: &[u8]) -> Param {
    Box::new(bytes.to_vec())
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        // The database is let go last, once nothing of this store writes it.
        self.claim = None;
    }
}

/// The connection settings in `url`, with a connect timeout unless it gives one.
fn config_of(url: &str) -> Result<postgres::Config, StoreError> {
    let mut config: postgres::Config = url
        .parse()
        .map_err(|error| StoreError::Io(format!("the store's URL does not parse: {error}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    Ok(config)
}

impl Store for PostgresStore {
    fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let rows = self.rows(
            "SELECT key, value FROM records WHERE key = $1",
            vec![bytes(key.as_bytes())],
        )?;
        Ok(rows.into_iter().next().map(|(_, value)| value))
    }

    fn get_many_raw(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let wanted: Vec<Vec<u8>> = keys.iter().map(|key| key.as_bytes().to_vec()).collect();
        let rows = self.rows(
            "SELECT key, value FROM records WHERE key = ANY($1)",
            vec![Box::new(wanted)],
        )?;
        let found: HashMap<String, Vec<u8>> = rows.into_iter().collect();
        Ok(keys.iter().map(|key| found.get(key).cloned()).collect())
    }

    fn scan_raw(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let (start, end) = key_range(prefix);
        self.rows(
            "SELECT key, value FROM records WHERE key >= $1 AND key < $2 ORDER BY key",
            vec![start, end],
        )
    }

    fn scan_after_raw(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let (start, end) = key_range(prefix);
        let after = after.map_or(&[][..], str::as_bytes);
        self.rows(
            "SELECT key, value FROM records WHERE key >= $1 AND key < $2 AND key > $3 \
             ORDER BY key LIMIT $4",
            vec![
                start,
                end,
                bytes(after),
                Box::new(i64::try_from(limit).unwrap_or(i64::MAX)),
            ],
        )
    }

    fn last_raw(&self, prefix: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        let (start, end) = key_range(prefix);
        let rows = self.rows(
            "SELECT key, value FROM records WHERE key >= $1 AND key < $2 \
             ORDER BY key DESC LIMIT 1",
            vec![start, end],
        )?;
        Ok(rows.into_iter().next())
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let (puts, removes) = settle(batch);
        if puts.is_empty() && removes.is_empty() {
            return Ok(());
        }
        self.call(move |link| link.apply(&puts, &removes))?
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.call(|link| {
            link.with_client(|client| {
                client.batch_execute(
                    "BEGIN; SET LOCAL synchronous_commit = on; SELECT txid_current(); COMMIT",
                )
            })
        })?
    }
}

/// A batch as one statement of each kind can apply it: what sled does with the same batch
/// (every put, then every remove) is each key's last put unless it is removed.
fn settle(batch: Batch) -> (Vec<Put>, Vec<Vec<u8>>) {
    let removes: Vec<Vec<u8>> = batch.removes.into_iter().map(String::into_bytes).collect();
    let removed: std::collections::HashSet<&[u8]> = removes.iter().map(Vec::as_slice).collect();
    let mut last: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for (key, value) in batch.puts {
        if !removed.contains(key.as_bytes()) {
            last.insert(key.into_bytes(), value);
        }
    }
    (last.into_iter().collect(), removes)
}

/// The keys starting with `prefix`, as the parameters `[start, end)` of a range query.
fn key_range(prefix: &str) -> (Param, Param) {
    // Keys are UTF-8, which never holds the byte 0xFF: every key sorts before it.
    let end = prefix_end(prefix.as_bytes()).unwrap_or_else(|| vec![0xFF]);
    (bytes(prefix.as_bytes()), bytes(&end))
}

/// The first key past every key starting with `prefix`; `None` when no key is (the prefix is
/// empty, or all 0xFF bytes).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// One connection thread's connection, opened when first needed and again after it broke.
struct Link {
    config: postgres::Config,
    connection: Option<Connection>,
}

/// An open connection with the statements prepared on it.
struct Connection {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl Connection {
    /// `sql`, prepared on this connection the first time it is asked for.
    fn statement(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }
}

impl Link {
    /// Runs `work` on the connection, opening it first if needed; once more on a new
    /// connection if the first one broke under it.
    fn with_connection<T>(
        &mut self,
        mut work: impl FnMut(&mut Connection) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let connection = self.connection()?;
            let answer = work(connection);
            let broke =
                connection.client.is_closed() || answer.as_ref().err().is_some_and(connection_lost);
            match answer {
                Ok(answer) => return Ok(answer),
                Err(error) if broke && tries < 2 => {
                    tracing::warn!(%error, "the store's connection broke; opening it again");
                    self.connection = None;
                }
                Err(error) => {
                    if broke {
                        self.connection = None;
                    }
                    return Err(database(error));
                }
            }
        }
    }

    /// [`Link::with_connection`] for work that needs only the client.
    fn with_client<T>(
        &mut self,
        mut work: impl FnMut(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        self.with_connection(|connection| work(&mut connection.client))
    }

    /// The connection, opened if there is none.
    fn connection(&mut self) -> Result<&mut Connection, StoreError> {
        if self
            .connection
            .as_ref()
            .is_none_or(|connection| connection.client.is_closed())
        {
            let mut client = self.config.connect(NoTls).map_err(database)?;
            client
                .batch_execute(&format!(
                    "SET synchronous_commit = off; SET statement_timeout = '{STATEMENT_TIMEOUT}'"
                ))
                .map_err(database)?;
            self.connection = Some(Connection {
                client,
                statements: HashMap::new(),
            });
        }
        Ok(self.connection.as_mut().expect("connected just above"))
    }

    /// Runs `sql` (prepared once per connection) with `params`.
    fn query(
        &mut self,
        sql: &'static str,
        params: &[Param],
    ) -> Result<Vec<postgres::Row>, StoreError> {
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|param| param.as_ref() as &(dyn postgres::types::ToSql + Sync))
            .collect();
        self.with_connection(|connection| {
            let statement = connection.statement(sql)?;
            connection.client.query(&statement, &params)
        })
    }

    /// Sets `puts` and removes `removes` in one transaction.
    fn apply(&mut self, puts: &[Put], removes: &[Vec<u8>]) -> Result<(), StoreError> {
        let keys: Vec<&[u8]> = puts.iter().map(|(key, _)| key.as_slice()).collect();
        let values: Vec<&[u8]> = puts.iter().map(|(_, value)| value.as_slice()).collect();
        let removes: Vec<&[u8]> = removes.iter().map(Vec::as_slice).collect();
        self.with_client(|client| {
            let mut transaction = client.transaction()?;
            if !keys.is_empty() {
                transaction.execute(
                    "INSERT INTO records (key, value) SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) \
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    &[&keys, &values],
                )?;
            }
            if !removes.is_empty() {
                transaction.execute("DELETE FROM records WHERE key = ANY($1)", &[&removes])?;
            }
            transaction.commit()
        })
    }
}

/// A connection thread: runs the jobs handed to it until the store is dropped.
fn serve_jobs(config: postgres::Config, jobs: &Mutex<mpsc::Receiver<Job>>) {
    let mut link = Link {
        config,
        connection: None,
    };
    loop {
        let job = match jobs.lock() {
            Ok(jobs) => jobs.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(&mut link),
            Err(_) => return,
        }
    }
}

/// Brings the schema to this release's version, one node at a time; refuses a database whose
/// schema is newer than this release knows.
fn migrate(link: &mut Link) -> Result<(), StoreError> {
    let known = MIGRATIONS.last().map_or(0, |(version, _, _)| *version);
    let applied = link.with_client(|client| {
        let mut transaction = client.transaction()?;
        transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        transaction.batch_execute(
            "CREATE TABLE IF NOT EXISTS fota_migrations (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )?;
        let newest: Option<i32> = transaction
            .query_one("SELECT max(version) FROM fota_migrations", &[])?
            .get(0);
        let newest = newest.unwrap_or(0);
        if newest > known {
            return Ok(Err(newest));
        }
        for (version, name, sql) in MIGRATIONS.iter().filter(|(version, ..)| *version > newest) {
            transaction.batch_execute(sql)?;
            transaction.execute(
                "INSERT INTO fota_migrations (version, name) VALUES ($1, $2)",
                &[version, name],
            )?;
            tracing::info!(version, name, "store schema migrated");
        }
        transaction.commit()?;
        Ok(Ok(()))
    })?;
    applied.map_err(|found| StoreError::NewerSchema { found, known })
}

/// Whether `error` says the connection is gone (the server shut it, or it failed): the
/// client may learn it is closed only after the error arrives.
fn connection_lost(error: &postgres::Error) -> bool {
    error.is_closed()
        || error.code().is_some_and(|code| {
            let code = code.code();
            code.starts_with("08") || code.starts_with("57P")
        })
}

pub(super) fn database(error: postgres::Error) -> StoreError {
    match error.as_db_error() {
        Some(db) => StoreError::Io(format!("database: {}: {}", db.code().code(), db.message())),
        None => match std::error::Error::source(&error) {
            Some(cause) => StoreError::Io(format!("database: {error}: {cause}")),
            None => StoreError::Io(format!("database: {error}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreExt;
    use crate::store::throwaway_postgres::ThrowawayPostgres;

    /// A new database on `server`, and a way to open a store on it.
    fn database(server: &ThrowawayPostgres, name: &str) -> String {
        server.create_database(name).expect("a database")
    }

    #[test]
    fn the_store_contract_holds_on_postgres() {
        let Some(server) = ThrowawayPostgres::for_test() else {
            return;
        };
        let url = database(&server, "contract");
        crate::store::conformance::suite(&|| {
            let store: Arc<dyn Store> = Arc::new(PostgresStore::open(&url, 2)?);
            Ok(store)
        });
    }

    #[test]
    fn nodes_on_one_database_migrate_once_and_see_each_others_writes() {
        let Some(server) = ThrowawayPostgres::for_test() else {
            return;
        };
        let url = database(&server, "nodes");
        let nodes: Vec<PostgresStore> = std::thread::scope(|scope| {
            let starting: Vec<_> = (0..3)
                .map(|_| scope.spawn(|| PostgresStore::open(&url, 1).expect("a node opens")))
                .collect();
            starting
                .into_iter()
                .map(|node| node.join().unwrap())
                .collect()
        });
        nodes[0].put("device/a", &"on node 0".to_string()).unwrap();
        nodes[1].put("device/b", &"on node 1".to_string()).unwrap();
        let seen: Vec<String> = nodes[2].scan("device/").unwrap();
        assert_eq!(seen, ["on node 0", "on node 1"]);
        let migrations = nodes[2]
            .call(|link| {
                link.with_client(|client| {
                    client.query_one("SELECT count(*) FROM fota_migrations", &[])
                })
            })
            .unwrap()
            .unwrap();
        assert_eq!(migrations.get::<_, i64>(0), MIGRATIONS.len() as i64);
    }

    #[test]
    fn a_second_engine_on_a_held_database_is_refused_until_the_first_lets_it_go() {
        let Some(server) = ThrowawayPostgres::for_test() else {
            return;
        };
        let url = database(&server, "held");
        let first = PostgresStore::open_held(&url, 1, Duration::ZERO).expect("the first engine");
        let refused = PostgresStore::open_held(&url, 1, Duration::from_millis(300));
        let Err(refusal @ StoreError::Held { .. }) = refused else {
            panic!("a second engine took a held database");
        };
        let why = refusal.to_string();
        assert!(
            why.contains("another engine is serving from this database"),
            "{why}"
        );
        // A store that does not hold the database (a tool, a test) still opens beside it.
        PostgresStore::open(&url, 1).expect("an unheld store");
        first.put("kept", &1u32).unwrap();
        drop(first);
        // Taken at once, or as soon as the server has seen the first connection close.
        let second = PostgresStore::open_held(&url, 1, Duration::from_secs(30))
            .expect("the database, once the first engine let it go");
        assert_eq!(second.get::<u32>("kept").unwrap(), Some(1));
    }

    #[test]
    fn a_hold_whose_connection_the_server_ends_says_it_is_lost() {
        let Some(server) = ThrowawayPostgres::for_test() else {
            return;
        };
        let url = database(&server, "hold-lost");
        let held = PostgresStore::open_held(&url, 1, Duration::ZERO).expect("the database");
        let lost = held
            .hold_lost()
            .expect("a held store says when it loses its hold");
        assert!(!*lost.borrow(), "held");
        let ended = ThrowawayPostgres::end_lock_holders(&url).unwrap();
        assert_eq!(ended, 1, "one session holds the lock");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !*lost.borrow() {
            assert!(
                std::time::Instant::now() < deadline,
                "the loss was not noticed"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The lock went with the connection: another engine takes the database.
        PostgresStore::open_held(&url, 1, Duration::from_secs(10)).expect("the database, free");
    }

    #[test]
    fn a_batch_the_database_refuses_leaves_nothing_and_says_why() {
        let Some(server) = ThrowawayPostgres::for_test() else {
            return;
        };
        let store = PostgresStore::open(&database(&server, "refused"), 1).unwrap();
        store.put("kept/a", &1u32).unwrap();
        let mut batch = Batch::new();
        batch.put("kept/a", &2u32).put("kept/b", &3u32);
        // Past what a btree index entry may hold (incompressible, so no compression brings it
        // under): the database refuses the whole batch.
        let huge: String = (0..20_000)
            .map(|_| char::from(b'a' + rand::random_range(0..26u8)))
            .collect();
        batch.put_bytes(format!("huge/{huge}"), vec![1]);
        let error = store.apply(batch).expect_err("refused");
        assert!(error.to_string().contains("database"), "{error}");
        assert_eq!(store.get::<u32>("kept/a").unwrap(), Some(1));
        assert_eq!(store.get::<u32>("kept/b").unwrap(), None);
    }

    #[test]
    fn a_connection_the_database_drops_is_made_again() {
        let Some(server) = ThrowawayPostgres::for_test() else {
            return;
        };
        let url = database(&server, "dropped");
        let store = PostgresStore::open(&url, 1).unwrap();
        store.put("kept/a", &1u32).unwrap();
        let admin = PostgresStore::open(&url, 1).unwrap();
        admin
            .call(|link| {
                link.with_client(|client| {
                    client.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE datname = current_database() AND pid <> pg_backend_pid()",
                        &[],
                    )
                })
            })
            .unwrap()
            .unwrap();
        assert_eq!(store.get::<u32>("kept/a").unwrap(), Some(1));
        store.put("kept/b", &2u32).unwrap();
        assert_eq!(store.get::<u32>("kept/b").unwrap(), Some(2));
    }

    #[test]
    fn a_schema_newer_than_this_release_is_refused_with_a_clear_error() {
        let Some(server) = ThrowawayPostgres::for_test() else {
            return;
        };
        let url = database(&server, "newer");
        let store = PostgresStore::open(&url, 1).unwrap();
        store
            .call(|link| {
                link.with_client(|client| {
                    client.execute(
                        "INSERT INTO fota_migrations (version, name) VALUES (99, 'future')",
                        &[],
                    )
                })
            })
            .unwrap()
            .unwrap();
        drop(store);
        let error = PostgresStore::open(&url, 1).err().expect("refused");
        assert!(
            matches!(error, StoreError::NewerSchema { found: 99, .. }),
            "{error}"
        );
    }

    #[test]
    fn an_unreachable_database_is_a_clear_error_not_a_hang() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgres://fota@127.0.0.1:{port}/none");
        let error = PostgresStore::open(&url, 1).err().expect("refused");
        assert!(error.to_string().contains("database"), "{error}");
        let error = PostgresStore::open("postgres://[nonsense", 1)
            .err()
            .expect("refused");
        assert!(error.to_string().contains("does not parse"), "{error}");
    }

    #[test]
    fn a_prefix_ends_at_the_next_byte_string_past_it() {
        assert_eq!(prefix_end(b"device/"), Some(b"device0".to_vec()));
        assert_eq!(prefix_end(b"a\xFF\xFF"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xFF"), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn a_batch_settles_as_sled_applies_it_last_put_wins_and_removes_come_after() {
        let mut batch = Batch::new();
        batch
            .put_bytes("a", vec![1])
            .put_bytes("b", vec![2])
            .put_bytes("a", vec![3])
            .put_bytes("c", vec![4])
            .remove("c")
            .remove("d");
        let (mut puts, removes) = settle(batch);
        puts.sort();
        assert_eq!(
            puts,
            vec![(b"a".to_vec(), vec![3]), (b"b".to_vec(), vec![2])]
        );
        assert_eq!(removes, vec![b"c".to_vec(), b"d".to_vec()]);
    }
}
