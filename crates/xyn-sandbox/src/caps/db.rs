//! The action's own SQLite database. SQL arrives as one statement with its parameters
//! bound (`?1`, `?2`, … or `?`), never spliced; an authorizer refuses `ATTACH`, `DETACH`,
//! every `PRAGMA` and `load_extension`; `SQLITE_LIMIT_ATTACHED` is 0 (so `VACUUM INTO` has
//! nowhere to write); `SQLITE_DBCONFIG_DEFENSIVE` is on and extension loading is off.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, OpenFlags};
use serde_json::{Map, Value, json};

/// Most rows `db.query` returns.
pub const MAX_ROWS: usize = 10_000;

pub enum DbError {
    Denied(String),
    Failed(String),
}

/// SQLite virtual-machine steps between two progress-handler calls, each charged as
/// that many fuel units.
pub const PROGRESS_EVERY: u64 = 1000;

/// What SQLite's memory may grow to: the action's memory budget, at least 8 MiB (the
/// page cache and a statement need room), and at most this many bytes of temporary
/// storage (sorts, temporary tables) in memory.
pub const MIN_HEAP: u64 = 8 << 20;

/// The CPU a statement uses, shared between the progress handler and the capability
/// layer: SQLite's virtual-machine steps are charged as fuel, and a statement is
/// interrupted when the fuel left or the invocation's deadline runs out.
#[derive(Debug)]
pub struct HostMeter {
    /// Fuel units charged by host work in this invocation.
    pub used: AtomicU64,
    /// Fuel the guest had left when the current host call started.
    pub left: AtomicU64,
    /// `used` when the current host call started.
    pub start: AtomicU64,
    /// 0: running; 1: fuel spent; 2: deadline passed; 3: SQLite's heap limit reached.
    pub tripped: AtomicU8,
}

impl HostMeter {
    pub fn new(fuel: u64) -> Self {
        Self {
            used: AtomicU64::new(0),
            left: AtomicU64::new(fuel),
            start: AtomicU64::new(0),
            tripped: AtomicU8::new(0),
        }
    }

    /// Charges `n` units; whether the call must stop (and why is kept in `tripped`).
    /// A host call starts with `left` fuel units for the guest.
    pub fn begin(&self, left: u64) {
        self.left.store(left, Ordering::Relaxed);
        self.start
            .store(self.used.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Why host work stopped: a budget code, or `None` while within both budgets.
    pub fn spent(&self) -> Option<&'static str> {
        match self.tripped.load(Ordering::Relaxed) {
            1 => Some(crate::error::codes::FUEL_EXCEEDED),
            2 => Some(crate::error::codes::TIMEOUT),
            3 => Some(crate::error::codes::MEMORY_EXCEEDED),
            _ => None,
        }
    }

    fn charge(&self, n: u64, deadline: Instant) -> bool {
        let used = self.used.fetch_add(n, Ordering::Relaxed) + n;
        let since = self.start.load(Ordering::Relaxed);
        if used.saturating_sub(since) > self.left.load(Ordering::Relaxed) {
            self.tripped.store(1, Ordering::Relaxed);
            return true;
        }
        if Instant::now() >= deadline {
            self.tripped.store(2, Ordering::Relaxed);
            return true;
        }
        false
    }
}

pub struct DbCap {
    path: PathBuf,
    conn: Option<Connection>,
    refused: Arc<Mutex<Option<String>>>,
    meter: Arc<HostMeter>,
    deadline: Instant,
    heap_bytes: u64,
}

impl DbCap {
    pub fn new(path: PathBuf, meter: Arc<HostMeter>, deadline: Instant, heap_bytes: u64) -> Self {
        Self {
            path,
            conn: None,
            refused: Arc::new(Mutex::new(None)),
            meter,
            deadline,
            heap_bytes,
        }
    }

    fn conn(&mut self) -> Result<&Connection, DbError> {
        if self.conn.is_none() {
            if let Some(parent) = self.path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| DbError::Failed(format!("cannot create the db dir: {e}")))?;
            }
            let mut c = open(&self.path, self.refused.clone(), self.heap_bytes)
                .map_err(|e| DbError::Failed(format!("cannot open the database: {e}")))?;
            let (meter, deadline) = (self.meter.clone(), self.deadline);
            c.progress_handler(
                PROGRESS_EVERY as i32,
                Some(move || meter.charge(PROGRESS_EVERY, deadline)),
            )
            .map_err(|e| DbError::Failed(format!("cannot open the database: {e}")))?;
            self.conn = Some(c);
        }
        self.conn
            .as_ref()
            .ok_or_else(|| DbError::Failed("no database".into()))
    }

    /// The memory budget SQLite's heap is held to (from the next connection on).
    pub fn set_heap(&mut self, bytes: u64) {
        self.heap_bytes = bytes;
    }

    /// Runs one statement; `query` returns rows, otherwise the change count.
    pub fn run(&mut self, sql: &str, params: &Value, query: bool) -> Result<Value, DbError> {
        let params = to_params(params)?;
        let refused = self.refused.clone();
        if let Ok(mut r) = refused.lock() {
            *r = None;
        }
        let meter = self.meter.clone();
        let conn = self.conn()?;
        let map_err = |e: rusqlite::Error| {
            if e.sqlite_error_code() == Some(rusqlite::ErrorCode::OutOfMemory) {
                meter.tripped.store(3, Ordering::Relaxed);
            }
            let why = refused.lock().ok().and_then(|mut r| r.take());
            match why {
                Some(w) => DbError::Denied(w),
                None => match e {
                    rusqlite::Error::MultipleStatement => {
                        DbError::Failed("db: one statement per call".into())
                    }
                    other => DbError::Failed(format!("db: {other}")),
                },
            }
        };
        let mut stmt = conn.prepare(sql).map_err(map_err)?;
        let n = stmt.parameter_count();
        if n != params.len() {
            return Err(DbError::Failed(format!(
                "db: the statement has {n} parameters, {} given",
                params.len()
            )));
        }
        if !query {
            let changes = stmt
                .execute(rusqlite::params_from_iter(params.iter()))
                .map_err(map_err)?;
            return Ok(json!({"changes": changes, "last_insert_rowid": conn.last_insert_rowid()}));
        }
        let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(map_err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(map_err)? {
            if out.len() >= MAX_ROWS {
                return Err(DbError::Failed(format!("db: more than {MAX_ROWS} rows")));
            }
            let mut obj = Map::new();
            for (i, name) in names.iter().enumerate() {
                let v = match row.get_ref(i).map_err(map_err)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(i) => json!(i),
                    ValueRef::Real(f) => json!(f),
                    ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::String(hex::encode(b)),
                };
                obj.insert(name.clone(), v);
            }
            out.push(Value::Object(obj));
        }
        Ok(Value::Array(out))
    }
}

fn to_params(v: &Value) -> Result<Vec<SqlValue>, DbError> {
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        // An empty Lua table arrives as an empty object.
        Value::Object(o) if o.is_empty() => return Ok(Vec::new()),
        Value::Array(a) => a,
        _ => return Err(DbError::Failed("db: params must be an array".into())),
    };
    Ok(items
        .iter()
        .map(|p| match p {
            Value::Null => SqlValue::Null,
            Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
            Value::Number(n) => match n.as_i64() {
                Some(i) => SqlValue::Integer(i),
                None => SqlValue::Real(n.as_f64().unwrap_or(0.0)),
            },
            Value::String(s) => SqlValue::Text(s.clone()),
            other => SqlValue::Text(other.to_string()),
        })
        .collect())
}

/// Opens an action database with the refusals in place.
pub fn open(
    path: &std::path::Path,
    refused: Arc<Mutex<Option<String>>>,
    heap_bytes: u64,
) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_millis(2000))?;
    // Temporary tables and sorts stay in memory: the sealed worker can reach no temp dir.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // SQLite's heap (page cache, sorts, temporary tables — all in memory) is bounded by the
    // action's memory budget: past it a statement fails with "out of memory" instead of
    // growing the worker. The limit is per process; a worker serves one action.
    let heap = heap_bytes.max(MIN_HEAP);
    conn.pragma_update(None, "hard_heap_limit", heap as i64)?;
    conn.pragma_update(None, "soft_heap_limit", (heap / 2) as i64)?;
    // The page cache may use at most a quarter of it (a negative value is KiB).
    conn.pragma_update(None, "cache_size", -((heap / 4 / 1024) as i64))?;
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA,
        false,
    )?;
    conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_ATTACHED, 0)?;
    conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_LENGTH, 16 << 20)?;
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        let why = match ctx.action {
            AuthAction::Attach { .. } => Some("ATTACH is not allowed"),
            AuthAction::Detach { .. } => Some("DETACH is not allowed"),
            AuthAction::Pragma { .. } => Some("PRAGMA is not allowed"),
            AuthAction::Function { function_name }
                if function_name.eq_ignore_ascii_case("load_extension") =>
            {
                Some("load_extension is not allowed")
            }
            _ => None,
        };
        match why {
            Some(w) => {
                if let Ok(mut r) = refused.lock() {
                    *r = Some(w.to_string());
                }
                Authorization::Deny
            }
            None => Authorization::Allow,
        }
    }))?;
    Ok(conn)
}
