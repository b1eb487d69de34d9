//! Retention on PostgreSQL: removing a prefix of the log under a signed checkpoint, rolling old
//! footprints up into daily sums.

use super::*;

impl PgStore {
    pub(super) async fn prune_log(
        &self,
        cutoff: Timestamp,
        keep_unpublished: bool,
        signer: &dyn CheckpointSigner,
        now: Timestamp,
    ) -> StoreResult<PruneReport> {
        let c = cutoff.as_micros();
        let rows = self
            .query(
                "WITH k AS (SELECT seq FROM events WHERE occurred_at >= $1 ORDER BY seq LIMIT 1), \
                      m AS (SELECT MAX(seq) AS seq FROM events), \
                      u AS (SELECT MIN(first_seq) AS seq FROM outbox WHERE published_at IS NULL) \
                 SELECT COALESCE((SELECT seq FROM k) - 1, (SELECT seq FROM m)), (SELECT seq FROM u)",
                &[&c],
            )
            .await?;
        let mut target: Option<(i64, String)> = None;
        if let Some(r) = rows.first() {
            let last: Option<i64> = rows::get(r, 0, "prune")?;
            let unpublished: Option<i64> = rows::get(r, 1, "prune")?;
            if let Some(mut last) = last {
                if keep_unpublished && let Some(u) = unpublished {
                    last = last.min(u - 1);
                }
                let h = self
                    .query("SELECT hash FROM events WHERE seq = $1", &[&last])
                    .await?;
                if let Some(hr) = h.first() {
                    target = Some((last, rows::get(hr, 0, "prune")?));
                }
            }
        }
        let cp = target.map(|(seq, hash)| Checkpoint {
            signature: signer.sign(&Checkpoint::signed_bytes(seq, &hash, now)),
            public_key: signer.public_key(),
            seq,
            hash,
            created_at: now,
        });
        let mut pc = self.pool.get().await?;
        let conn = pc.conn()?;
        let tx = conn.client.transaction().await.map_err(pg_err)?;
        let mut report = PruneReport::default();
        if let Some(cp) = cp {
            let h = tx
                .query_opt("SELECT hash FROM events WHERE seq = $1", &[&cp.seq])
                .await
                .map_err(pg_err)?;
            let h: Option<String> = h.map(|r| rows::get(&r, 0, "prune")).transpose()?;
            if h.as_deref() != Some(cp.hash.as_str()) {
                return Err(StoreError::Conflict(format!(
                    "event seq {} changed while pruning",
                    cp.seq
                )));
            }
            report.events_removed = tx
                .execute("DELETE FROM events WHERE seq <= $1", &[&cp.seq])
                .await
                .map_err(pg_err)? as i64;
            report.outbox_rows_removed = tx
                .execute("DELETE FROM outbox WHERE last_seq <= $1", &[&cp.seq])
                .await
                .map_err(pg_err)? as i64;
            tx.execute(
                "INSERT INTO chain_checkpoints (seq, hash, created_at, public_key, signature) VALUES ($1, $2, $3, $4, $5)",
                &[&cp.seq, &cp.hash, &cp.created_at.as_micros(), &cp.public_key, &cp.signature],
            )
            .await
            .map_err(pg_err)?;
            report.checkpoint = Some(cp);
        }
        report.rollup_rows_written = tx
            .execute(
                "INSERT INTO footprint_rollups (day, metric, source_kind, source_ref, unit, class, quantity, samples) \
                 SELECT (occurred_at / 86400000000) * 86400000000 AS day, metric, source_kind, source_ref, unit, class, \
                        SUM(quantity), COUNT(*) FROM footprints WHERE occurred_at < $1 \
                 GROUP BY 1, metric, source_kind, source_ref, unit, class \
                 ON CONFLICT (day, metric, source_kind, source_ref, unit, class) DO UPDATE SET \
                    quantity = footprint_rollups.quantity + excluded.quantity, \
                    samples = footprint_rollups.samples + excluded.samples",
                &[&c],
            )
            .await
            .map_err(pg_err)? as i64;
        report.footprints_rolled_up = tx
            .execute("DELETE FROM footprints WHERE occurred_at < $1", &[&c])
            .await
            .map_err(pg_err)? as i64;
        tx.commit().await.map_err(pg_err)?;
        Ok(report)
    }

    pub(super) async fn latest_checkpoint(&self) -> StoreResult<Option<Checkpoint>> {
        let rows = self
            .query(
                "SELECT seq, hash, created_at, public_key, signature FROM chain_checkpoints \
                 ORDER BY seq DESC LIMIT 1",
                &[],
            )
            .await?;
        match rows.first() {
            None => Ok(None),
            Some(r) => Ok(Some(Checkpoint {
                seq: rows::get(r, 0, "checkpoint")?,
                hash: rows::get(r, 1, "checkpoint")?,
                created_at: Timestamp::from_micros(rows::get(r, 2, "checkpoint")?),
                public_key: rows::get(r, 3, "checkpoint")?,
                signature: rows::get(r, 4, "checkpoint")?,
            })),
        }
    }
}
