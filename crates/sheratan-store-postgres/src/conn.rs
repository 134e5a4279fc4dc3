//! Connections: opened with the store's settings (schema, statement timeout), driven on their
//! own tasks, reopened when they break (the database restarted), and a tiny pool for reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sheratan_store::StoreError;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    /// The schema the tables live in (created if missing); `None` for the default.
    pub schema: Option<String>,
}

impl Target {
    pub async fn connect(&self) -> Result<Client, StoreError> {
        let (client, connection) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_postgres::connect(&self.url, NoTls),
        )
        .await
        .map_err(|_| StoreError::Unavailable("PostgreSQL did not answer within 10 s".into()))?
        .map_err(unavailable)?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!("postgres connection ended: {err}");
            }
        });
        // A statement that hangs (a lock held by a dead peer, a stalled server) must not hang
        // a request forever.
        let mut setup = String::from(
            "SET client_min_messages = warning; SET statement_timeout = '30s'; SET lock_timeout = '10s';",
        );
        if let Some(schema) = &self.schema {
            let quoted = quote_ident(schema);
            setup.push_str(&format!(
                "CREATE SCHEMA IF NOT EXISTS {quoted}; SET search_path TO {quoted};"
            ));
        }
        client.batch_execute(&setup).await.map_err(classify)?;
        Ok(client)
    }
}

impl Target {
    /// A new connection with an empty statement cache.
    pub async fn open(&self) -> Result<Conn, StoreError> {
        Ok(Conn {
            client: self.connect().await?,
            statements: StatementCache::default(),
            last_used: std::time::Instant::now(),
        })
    }
}

/// `"name"` with inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A connection and the statements prepared on it.
///
/// The hot statements are prepared once per connection: an unprepared query costs a second
/// round trip (parse, then bind and execute) on every call.
pub struct Conn {
    pub client: Client,
    pub statements: StatementCache,
    /// When the slot last handed it out.
    last_used: std::time::Instant,
}

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// Statements prepared on one connection, by their SQL.
#[derive(Default)]
pub struct StatementCache(std::sync::Mutex<std::collections::HashMap<&'static str, Statement>>);

/// A transaction on a writer's connection whose fixed statements are prepared once per
/// connection and reused, and whose `BEGIN` travels with its first statement(s) instead of
/// costing a round trip of its own. On a busy 2-core machine a round trip to PostgreSQL costs
/// a few hundred microseconds of scheduling, and a group's latency is what limits how many
/// requests per second a few clients with one request in flight each can make.
pub struct Db<'a> {
    client: &'a Client,
    statements: &'a StatementCache,
    begun: std::sync::atomic::AtomicBool,
}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// A statement's future, for [`Db::pipeline`].
pub type Pending<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a>,
>;

impl<'a> Db<'a> {
    pub fn new(conn: &'a Conn) -> Db<'a> {
        Db {
            client: &conn.client,
            statements: &conn.statements,
            begun: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The prepared statement for `sql` (prepared now if this connection has not yet).
    pub async fn statement(&self, sql: &'static str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.statements.0.lock().expect("statement cache").get(sql) {
            return Ok(s.clone());
        }
        // A statement belongs to the session, not to a transaction: it outlives a rollback.
        let prepared = self.client.prepare(sql).await?;
        self.statements
            .0
            .lock()
            .expect("statement cache")
            .insert(sql, prepared.clone());
        Ok(prepared)
    }

    /// Sends `BEGIN` together with the first statement; later statements run as they are.
    /// `join` polls in order and tokio-postgres sends a request when its future is first
    /// polled, so `BEGIN` always reaches the server first.
    async fn first<T>(
        &self,
        statement: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, tokio_postgres::Error> {
        if self.begun.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return statement.await;
        }
        let (begin, result) =
            futures_util::future::join(self.client.batch_execute("BEGIN"), statement).await;
        // BEGIN fails only on a broken connection, which fails the statement too.
        begin?;
        result
    }

    /// Runs `statements` pipelined: all are sent before any answer is read (`join_all` polls
    /// in order). Their statements must be prepared already (see [`Db::statement`]), or a
    /// prepare round trip would reorder them.
    pub async fn pipeline(
        &self,
        statements: Vec<Pending<'_>>,
    ) -> Result<Vec<Result<Vec<Row>, tokio_postgres::Error>>, tokio_postgres::Error> {
        self.first(async { Ok(futures_util::future::join_all(statements).await) })
            .await
    }

    pub async fn execute(
        &self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<u64, tokio_postgres::Error> {
        let st = self.statement(sql).await?;
        self.first(self.client.execute(&st, params)).await
    }

    pub async fn query(
        &self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let st = self.statement(sql).await?;
        self.first(self.client.query(&st, params)).await
    }

    pub async fn query_opt(
        &self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        let st = self.statement(sql).await?;
        self.first(self.client.query_opt(&st, params)).await
    }

    pub async fn query_one(
        &self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Row, tokio_postgres::Error> {
        let st = self.statement(sql).await?;
        self.first(self.client.query_one(&st, params)).await
    }

    /// A statement's future for [`Db::pipeline`].
    pub fn pending<'p>(&'p self, st: &'p Statement, params: Params<'p>) -> Pending<'p> {
        Box::pin(self.client.query(st, params))
    }

    pub async fn commit(self) -> Result<(), tokio_postgres::Error> {
        if self.begun.load(std::sync::atomic::Ordering::Relaxed) {
            self.client.batch_execute("COMMIT").await?;
        }
        Ok(())
    }

    pub async fn rollback(self) {
        if self.begun.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = self.client.batch_execute("ROLLBACK").await;
        }
    }
}

/// A connection that reopens itself: `get` hands out a live client.
pub struct Slot {
    target: Arc<Target>,
    client: tokio::sync::Mutex<Option<Conn>>,
    /// Session settings run after each (re)connect.
    settings: Option<&'static str>,
}

/// How long a connection may sit unused before [`Slot::lock`] checks it is still alive.
const IDLE_CHECK_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Writers' sessions never sort to pick jobs. The planner's estimates for `queue = ANY(…)` and
/// `required_capabilities <@ …` are far too low (and a fast-growing queue table is rarely
/// analyzed in time), so it would rather fetch every ready job and sort them than walk the
/// `jobs_ready` index in order and stop after a few: 30–80 ms instead of 0.1 ms per lease
/// with 20,000 jobs queued. With sorts ruled out, ordered index scans are the only plans
/// left for the writers' `ORDER BY … LIMIT` statements, whatever the statistics say.
///
/// Their prepared statements also keep one generic plan: by default PostgreSQL plans every
/// execution again while a custom plan looks cheaper, and profiling showed the writers'
/// backends spending much of their time in the parser and planner.
const WRITER_SETTINGS: &str = "SET enable_sort = off; SET plan_cache_mode = force_generic_plan;";

impl Slot {
    pub fn new(target: Arc<Target>) -> Self {
        Self {
            target,
            client: tokio::sync::Mutex::new(None),
            settings: None,
        }
    }

    /// A slot for a writer: see [`WRITER_SETTINGS`].
    pub fn writer(target: Arc<Target>) -> Self {
        Self {
            settings: Some(WRITER_SETTINGS),
            ..Self::new(target)
        }
    }

    pub async fn lock(&self) -> Result<tokio::sync::MappedMutexGuard<'_, Conn>, StoreError> {
        let mut guard = self.client.lock().await;
        // A connection idle for a while may have died without our noticing yet (the database
        // restarted, a half-open socket): an empty query finds out before a whole group is
        // sent on it and failed. Busy connections skip this round trip.
        if let Some(conn) = guard.as_mut() {
            if !conn.is_closed()
                && conn.last_used.elapsed() > IDLE_CHECK_AFTER
                && conn.client.batch_execute("").await.is_err()
            {
                tracing::debug!("postgres store: an idle connection was dead; reconnecting");
                *guard = None;
            } else {
                conn.last_used = std::time::Instant::now();
            }
        }
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            let conn = self.target.open().await?;
            if let Some(settings) = self.settings {
                conn.batch_execute(settings).await.map_err(classify)?;
            }
            *guard = Some(conn);
        }
        Ok(tokio::sync::MutexGuard::map(guard, |c| {
            c.as_mut().expect("just connected")
        }))
    }
}

/// Round-robin over a few slots for reads.
pub struct Pool {
    slots: Vec<Slot>,
    next: AtomicUsize,
}

impl Pool {
    pub fn new(target: Arc<Target>, size: usize) -> Self {
        Self {
            slots: (0..size.max(1))
                .map(|_| Slot::new(target.clone()))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    pub async fn get(&self) -> Result<tokio::sync::MappedMutexGuard<'_, Conn>, StoreError> {
        // Prefer a free slot; otherwise queue on the next one.
        for slot in &self.slots {
            if let Ok(mut guard) = slot.client.try_lock() {
                if guard.as_ref().is_none_or(|c| c.is_closed()) {
                    *guard = Some(slot.target.open().await?);
                }
                return Ok(tokio::sync::MutexGuard::map(guard, |c| {
                    c.as_mut().expect("connected")
                }));
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        self.slots[i].lock().await
    }
}

pub fn unavailable(err: tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(describe(&err))
}

fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            let mut message = err.to_string();
            let mut source = std::error::Error::source(err);
            while let Some(s) = source {
                message = format!("{message}: {s}");
                source = s.source();
            }
            message
        }
    }
}

/// Conditions an operator fixes (database down or restarting, connections exhausted, disk
/// full, read-only, timeouts) are `Unavailable`; anything else is `Internal`.
pub fn classify(err: tokio_postgres::Error) -> StoreError {
    let message = describe(&err);
    match err.code() {
        None => StoreError::Unavailable(message),
        Some(code) => {
            let c = code.code();
            // 08 connection, 53 resources, 57 operator intervention (shutdown), 40 rollbacks,
            // 55P03 lock timeout, 57014 statement timeout, 25006 read-only.
            if c.starts_with("08")
                || c.starts_with("53")
                || c.starts_with("57")
                || c.starts_with("40")
                || c == "55P03"
                || c == "25006"
            {
                StoreError::Unavailable(message)
            } else {
                StoreError::Internal(message)
            }
        }
    }
}
