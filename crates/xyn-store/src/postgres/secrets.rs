//! The secret store's rows on PostgreSQL (see `crate::secrets`).

use tokio_postgres::{Client, Row};
use xyn_core::Timestamp;

use crate::secrets::{
    MasterKeyRow, SecretMetaRow, SecretVersionInfo, SecretVersionRow, WrappedKeyRow,
};
use crate::{StoreError, StoreResult};

use super::{pg_err, rows};

pub(crate) const VERSION_COLS: &str =
    "path, version, created_at, created_by, key_id, wrapped_key, nonce, ciphertext";

pub(crate) const GET_LATEST: &str = "SELECT path, version, created_at, created_by, key_id, \
     wrapped_key, nonce, ciphertext FROM secrets WHERE path = $1 ORDER BY version DESC LIMIT 1";
pub(crate) const GET_VERSION: &str = "SELECT path, version, created_at, created_by, key_id, \
     wrapped_key, nonce, ciphertext FROM secrets WHERE path = $1 AND version = $2";
pub(crate) const LIST: &str = "SELECT s.path, MAX(s.version), COUNT(*), MIN(s.created_at), \
     MAX(s.created_at), (SELECT l.created_by FROM secrets l WHERE l.path = s.path \
     ORDER BY l.version DESC LIMIT 1) \
     FROM secrets s WHERE starts_with(s.path, $1::text) GROUP BY s.path ORDER BY s.path";
pub(crate) const VERSIONS: &str =
    "SELECT version, created_at, created_by FROM secrets WHERE path = $1 ORDER BY version";
pub(crate) const WRAPPED: &str =
    "SELECT path, version, key_id, wrapped_key FROM secrets ORDER BY path, version";
pub(crate) const MASTER: &str =
    "SELECT key_id, kind, params, check_blob, created_at FROM secret_master WHERE id = 1";

pub(crate) fn version_row(r: &Row) -> StoreResult<SecretVersionRow> {
    Ok(SecretVersionRow {
        path: rows::get(r, 0, "secret")?,
        version: rows::get(r, 1, "secret")?,
        created_at: Timestamp::from_micros(rows::get(r, 2, "secret")?),
        created_by: rows::get(r, 3, "secret")?,
        key_id: rows::get(r, 4, "secret")?,
        wrapped_key: rows::get(r, 5, "secret")?,
        nonce: rows::get(r, 6, "secret")?,
        ciphertext: rows::get(r, 7, "secret")?,
    })
}

pub(crate) fn meta_row(r: &Row) -> StoreResult<SecretMetaRow> {
    Ok(SecretMetaRow {
        path: rows::get(r, 0, "secret")?,
        latest_version: rows::get(r, 1, "secret")?,
        versions: rows::get(r, 2, "secret")?,
        created_at: Timestamp::from_micros(rows::get(r, 3, "secret")?),
        updated_at: Timestamp::from_micros(rows::get(r, 4, "secret")?),
        updated_by: rows::get(r, 5, "secret")?,
    })
}

pub(crate) fn version_info(r: &Row) -> StoreResult<SecretVersionInfo> {
    Ok(SecretVersionInfo {
        version: rows::get(r, 0, "secret")?,
        created_at: Timestamp::from_micros(rows::get(r, 1, "secret")?),
        created_by: rows::get(r, 2, "secret")?,
    })
}

pub(crate) fn wrapped_row(r: &Row) -> StoreResult<WrappedKeyRow> {
    Ok(WrappedKeyRow {
        path: rows::get(r, 0, "secret")?,
        version: rows::get(r, 1, "secret")?,
        key_id: rows::get(r, 2, "secret")?,
        wrapped_key: rows::get(r, 3, "secret")?,
    })
}

pub(crate) fn master_row(r: &Row) -> StoreResult<MasterKeyRow> {
    Ok(MasterKeyRow {
        key_id: rows::get(r, 0, "secret master")?,
        kind: rows::get(r, 1, "secret master")?,
        params: rows::get(r, 2, "secret master")?,
        check: rows::get(r, 3, "secret master")?,
        created_at: Timestamp::from_micros(rows::get(r, 4, "secret master")?),
    })
}

pub(crate) async fn put(c: &mut Client, row: SecretVersionRow) -> StoreResult<()> {
    let tx = c.transaction().await.map_err(pg_err)?;
    // The master row is share-locked: a rotation (which updates it) waits for this put, or
    // this put sees the new key and is refused.
    let master = tx
        .query_opt(
            "SELECT key_id FROM secret_master WHERE id = 1 FOR SHARE",
            &[],
        )
        .await
        .map_err(pg_err)?;
    let master: Option<String> = master
        .map(|r| rows::get(&r, 0, "secret master"))
        .transpose()?;
    if master.as_deref() != Some(row.key_id.as_str()) {
        return Err(StoreError::Conflict(format!(
            "the master key is not {} (rotated meanwhile?)",
            row.key_id
        )));
    }
    let latest = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM secrets WHERE path = $1",
            &[&row.path],
        )
        .await
        .map_err(pg_err)?;
    let latest: i64 = rows::get(&latest, 0, "secret")?;
    if row.version != latest + 1 {
        return Err(StoreError::Conflict(format!(
            "secret {} is at version {latest}, not {}",
            row.path,
            row.version - 1
        )));
    }
    tx.execute(
        &format!("INSERT INTO secrets ({VERSION_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
        &[
            &row.path,
            &row.version,
            &row.created_at.as_micros(),
            &row.created_by,
            &row.key_id,
            &row.wrapped_key,
            &row.nonce,
            &row.ciphertext,
        ],
    )
    .await
    .map_err(pg_err)?;
    tx.commit().await.map_err(pg_err)
}

pub(crate) async fn master_init(c: &mut Client, row: MasterKeyRow) -> StoreResult<()> {
    c.execute(
        "INSERT INTO secret_master (id, key_id, kind, params, check_blob, created_at) \
         VALUES (1, $1, $2, $3, $4, $5)",
        &[
            &row.key_id,
            &row.kind,
            &row.params,
            &row.check,
            &row.created_at.as_micros(),
        ],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}

pub(crate) async fn rotate(
    c: &mut Client,
    old_key_id: &str,
    new: MasterKeyRow,
    rewrapped: Vec<WrappedKeyRow>,
) -> StoreResult<()> {
    let tx = c.transaction().await.map_err(pg_err)?;
    let n = tx
        .execute(
            "UPDATE secret_master SET key_id = $1, kind = $2, params = $3, check_blob = $4, \
             created_at = $5 WHERE id = 1 AND key_id = $6",
            &[
                &new.key_id,
                &new.kind,
                &new.params,
                &new.check,
                &new.created_at.as_micros(),
                &old_key_id,
            ],
        )
        .await
        .map_err(pg_err)?;
    if n != 1 {
        return Err(StoreError::Conflict(format!(
            "the master key is not {old_key_id} any more"
        )));
    }
    let st = tx
        .prepare(
            "UPDATE secrets SET key_id = $1, wrapped_key = $2 \
             WHERE path = $3 AND version = $4 AND key_id = $5",
        )
        .await
        .map_err(pg_err)?;
    for w in &rewrapped {
        let n = tx
            .execute(
                &st,
                &[
                    &new.key_id,
                    &w.wrapped_key,
                    &w.path,
                    &w.version,
                    &old_key_id,
                ],
            )
            .await
            .map_err(pg_err)?;
        if n != 1 {
            return Err(StoreError::Conflict(format!(
                "secret {} version {} changed during rotation",
                w.path, w.version
            )));
        }
    }
    let left = tx
        .query_one(
            "SELECT COUNT(*)::BIGINT FROM secrets WHERE key_id <> $1",
            &[&new.key_id],
        )
        .await
        .map_err(pg_err)?;
    let left: i64 = rows::get(&left, 0, "secret")?;
    if left != 0 {
        return Err(StoreError::Conflict(format!(
            "{left} secret versions were written during rotation; rotate again"
        )));
    }
    tx.commit().await.map_err(pg_err)
}
