//! The action's own SQLite database. SQL arrives as one statement with its parameters
//! bound (`?1`, `?2`, … or `?`), never spliced; an authorizer refuses `ATTACH`, `DETACH`,
//! every `PRAGMA` and `load_extension`; `SQLITE_LIMIT_ATTACHED` is 0 (so `VACUUM INTO` has
//! nowhere to write); `SQLITE_DBCONFIG_DEFENSIVE` is on and extension loading is off.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

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

pub struct DbCap {
    path: PathBuf,
    conn: Option<Connection>,
    refused: Arc<Mutex<Option<String>>>,
}

impl DbCap {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            conn: None,
            refused: Arc::new(Mutex::new(None)),
        }
    }

    fn conn(&mut self) -> Result<&Connection, DbError> {
        if self.conn.is_none() {
            if let Some(parent) = self.path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| DbError::Failed(format!("cannot create the db dir: {e}")))?;
            }
            let c = open(&self.path, self.refused.clone())
                .map_err(|e| DbError::Failed(format!("cannot open the database: {e}")))?;
            self.conn = Some(c);
        }
        self.conn
            .as_ref()
            .ok_or_else(|| DbError::Failed("no database".into()))
    }

    /// Runs one statement; `query` returns rows, otherwise the change count.
    pub fn run(&mut self, sql: &str, params: &Value, query: bool) -> Result<Value, DbError> {
        let params = to_params(params)?;
        let refused = self.refused.clone();
        if let Ok(mut r) = refused.lock() {
            *r = None;
        }
        let conn = self.conn()?;
        let map_err = |e: rusqlite::Error| {
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
