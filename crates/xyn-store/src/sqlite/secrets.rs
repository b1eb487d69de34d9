//! The secret store's rows on SQLite (see `crate::secrets`).

use rusqlite::{Connection, OptionalExtension, params};
use xyn_core::Timestamp;

use crate::secrets::{
    MasterKeyRow, SecretMetaRow, SecretVersionInfo, SecretVersionRow, WrappedKeyRow,
};
use crate::{StoreError, StoreResult};

use super::{sql_err, unavailable};

const VERSION_COLS: &str =
    "path, version, created_at, created_by, key_id, wrapped_key, nonce, ciphertext";

fn version_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SecretVersionRow> {
    Ok(SecretVersionRow {
        path: r.get(0)?,
        version: r.get(1)?,
        created_at: Timestamp::from_micros(r.get(2)?),
        created_by: r.get(3)?,
        key_id: r.get(4)?,
        wrapped_key: r.get(5)?,
        nonce: r.get(6)?,
        ciphertext: r.get(7)?,
    })
}

pub(crate) fn put(c: &mut Connection, row: SecretVersionRow) -> StoreResult<()> {
    let tx = c.transaction().map_err(unavailable)?;
    let master: Option<String> = tx
        .query_row("SELECT key_id FROM secret_master WHERE id = 1", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(unavailable)?;
    if master.as_deref() != Some(row.key_id.as_str()) {
        return Err(StoreError::Conflict(format!(
            "the master key is not {} (rotated meanwhile?)",
            row.key_id
        )));
    }
    let latest: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM secrets WHERE path = ?1",
            params![row.path],
            |r| r.get(0),
        )
        .map_err(unavailable)?;
    if row.version != latest + 1 {
        return Err(StoreError::Conflict(format!(
            "secret {} is at version {latest}, not {}",
            row.path,
            row.version - 1
        )));
    }
    tx.execute(
        &format!("INSERT INTO secrets ({VERSION_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
        params![
            row.path,
            row.version,
            row.created_at.as_micros(),
            row.created_by,
            row.key_id,
            row.wrapped_key,
            row.nonce,
            row.ciphertext
        ],
    )
    .map_err(sql_err)?;
    tx.commit().map_err(unavailable)
}

pub(crate) fn get(
    c: &Connection,
    path: &str,
    version: Option<i64>,
) -> StoreResult<Option<SecretVersionRow>> {
    let r = match version {
        Some(v) => c
            .prepare_cached(&format!(
                "SELECT {VERSION_COLS} FROM secrets WHERE path = ?1 AND version = ?2"
            ))
            .and_then(|mut s| s.query_row(params![path, v], version_row).optional()),
        None => c
            .prepare_cached(&format!(
                "SELECT {VERSION_COLS} FROM secrets WHERE path = ?1 ORDER BY version DESC LIMIT 1"
            ))
            .and_then(|mut s| s.query_row(params![path], version_row).optional()),
    };
    r.map_err(unavailable)
}

pub(crate) fn list(c: &Connection, prefix: &str) -> StoreResult<Vec<SecretMetaRow>> {
    let mut st = c
        .prepare_cached(
            "SELECT s.path, MAX(s.version), COUNT(*), MIN(s.created_at), MAX(s.created_at), \
               (SELECT l.created_by FROM secrets l WHERE l.path = s.path ORDER BY l.version DESC LIMIT 1) \
             FROM secrets s WHERE substr(s.path, 1, length(?1)) = ?1 GROUP BY s.path ORDER BY s.path",
        )
        .map_err(unavailable)?;
    let rows = st
        .query_map(params![prefix], |r| {
            Ok(SecretMetaRow {
                path: r.get(0)?,
                latest_version: r.get(1)?,
                versions: r.get(2)?,
                created_at: Timestamp::from_micros(r.get(3)?),
                updated_at: Timestamp::from_micros(r.get(4)?),
                updated_by: r.get(5)?,
            })
        })
        .map_err(unavailable)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
}

pub(crate) fn versions(c: &Connection, path: &str) -> StoreResult<Vec<SecretVersionInfo>> {
    let mut st = c
        .prepare_cached(
            "SELECT version, created_at, created_by FROM secrets WHERE path = ?1 ORDER BY version",
        )
        .map_err(unavailable)?;
    let rows = st
        .query_map(params![path], |r| {
            Ok(SecretVersionInfo {
                version: r.get(0)?,
                created_at: Timestamp::from_micros(r.get(1)?),
                created_by: r.get(2)?,
            })
        })
        .map_err(unavailable)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
}

pub(crate) fn delete(c: &mut Connection, path: &str) -> StoreResult<u64> {
    c.execute("DELETE FROM secrets WHERE path = ?1", params![path])
        .map(|n| n as u64)
        .map_err(unavailable)
}

pub(crate) fn wrapped_keys(c: &Connection) -> StoreResult<Vec<WrappedKeyRow>> {
    let mut st = c
        .prepare_cached(
            "SELECT path, version, key_id, wrapped_key FROM secrets ORDER BY path, version",
        )
        .map_err(unavailable)?;
    let rows = st
        .query_map([], |r| {
            Ok(WrappedKeyRow {
                path: r.get(0)?,
                version: r.get(1)?,
                key_id: r.get(2)?,
                wrapped_key: r.get(3)?,
            })
        })
        .map_err(unavailable)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
}

fn master_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MasterKeyRow> {
    Ok(MasterKeyRow {
        key_id: r.get(0)?,
        kind: r.get(1)?,
        params: r.get(2)?,
        check: r.get(3)?,
        created_at: Timestamp::from_micros(r.get(4)?),
    })
}

pub(crate) fn master(c: &Connection) -> StoreResult<Option<MasterKeyRow>> {
    c.query_row(
        "SELECT key_id, kind, params, check_blob, created_at FROM secret_master WHERE id = 1",
        [],
        master_row,
    )
    .optional()
    .map_err(unavailable)
}

pub(crate) fn master_init(c: &mut Connection, row: MasterKeyRow) -> StoreResult<()> {
    c.execute(
        "INSERT INTO secret_master (id, key_id, kind, params, check_blob, created_at) \
         VALUES (1, ?1, ?2, ?3, ?4, ?5)",
        params![
            row.key_id,
            row.kind,
            row.params,
            row.check,
            row.created_at.as_micros()
        ],
    )
    .map_err(sql_err)?;
    Ok(())
}

pub(crate) fn rotate(
    c: &mut Connection,
    old_key_id: &str,
    new: MasterKeyRow,
    rewrapped: Vec<WrappedKeyRow>,
) -> StoreResult<()> {
    let tx = c.transaction().map_err(unavailable)?;
    let n = tx
        .execute(
            "UPDATE secret_master SET key_id = ?1, kind = ?2, params = ?3, check_blob = ?4, \
             created_at = ?5 WHERE id = 1 AND key_id = ?6",
            params![
                new.key_id,
                new.kind,
                new.params,
                new.check,
                new.created_at.as_micros(),
                old_key_id
            ],
        )
        .map_err(unavailable)?;
    if n != 1 {
        return Err(StoreError::Conflict(format!(
            "the master key is not {old_key_id} any more"
        )));
    }
    for w in &rewrapped {
        let n = tx
            .prepare_cached(
                "UPDATE secrets SET key_id = ?1, wrapped_key = ?2 \
                 WHERE path = ?3 AND version = ?4 AND key_id = ?5",
            )
            .and_then(|mut s| {
                s.execute(params![
                    new.key_id,
                    w.wrapped_key,
                    w.path,
                    w.version,
                    old_key_id
                ])
            })
            .map_err(unavailable)?;
        if n != 1 {
            return Err(StoreError::Conflict(format!(
                "secret {} version {} changed during rotation",
                w.path, w.version
            )));
        }
    }
    let left: i64 = tx
        .query_row(
            "SELECT COUNT(*) FROM secrets WHERE key_id <> ?1",
            params![new.key_id],
            |r| r.get(0),
        )
        .map_err(unavailable)?;
    if left != 0 {
        return Err(StoreError::Conflict(format!(
            "{left} secret versions were written during rotation; rotate again"
        )));
    }
    tx.commit().map_err(unavailable)
}
