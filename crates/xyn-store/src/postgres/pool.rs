//! Connections: opening one, and the small pool of read connections with their prepared statements.

use super::*;

pub(super) async fn connect(
    pc: &tokio_postgres::Config,
    target: &str,
) -> StoreResult<(Client, JoinHandle<()>)> {
    let (client, conn) = pc.connect(NoTls).await.map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot connect to PostgreSQL at {target}: {}",
            with_causes(&e)
        ))
    })?;
    let task = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok((client, task))
}

// ---------------------------------------------------------------------------------------------
// The connection pool.

pub(super) struct PConn {
    pub(super) client: Client,
    pub(super) cache: HashMap<String, Statement>,
    pub(super) task: JoinHandle<()>,
}

impl Drop for PConn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(super) struct Pool {
    pub(super) pc: tokio_postgres::Config,
    pub(super) target: String,
    pub(super) idle: Mutex<Vec<PConn>>,
    pub(super) sem: Semaphore,
}

pub(super) struct Pooled<'a> {
    pub(super) pool: &'a Pool,
    pub(super) conn: Option<PConn>,
    pub(super) _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Pool {
    pub(super) async fn get(&self) -> StoreResult<Pooled<'_>> {
        let permit = self
            .sem
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        let idle = loop {
            let c = self.idle.lock().ok().and_then(|mut v| v.pop());
            match c {
                Some(c) if c.client.is_closed() => continue,
                other => break other,
            }
        };
        let conn = match idle {
            Some(c) => c,
            None => {
                let (client, task) = connect(&self.pc, &self.target).await?;
                PConn {
                    client,
                    cache: HashMap::new(),
                    task,
                }
            }
        };
        Ok(Pooled {
            pool: self,
            conn: Some(conn),
            _permit: permit,
        })
    }
}

impl Pooled<'_> {
    pub(super) fn conn(&mut self) -> StoreResult<&mut PConn> {
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("connection already released".into()))
    }

    pub(super) async fn stmt(&mut self, sql: &str) -> StoreResult<(Statement, &Client)> {
        let c = self.conn()?;
        if !c.cache.contains_key(sql) {
            let st = c.client.prepare(sql).await.map_err(pg_err)?;
            c.cache.insert(sql.to_string(), st);
        }
        let st = c
            .cache
            .get(sql)
            .cloned()
            .ok_or_else(|| StoreError::Unavailable("statement cache lost an entry".into()))?;
        Ok((st, &c.client))
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take()
            && !c.client.is_closed()
            && let Ok(mut idle) = self.pool.idle.lock()
        {
            idle.push(c);
        }
    }
}

pub(super) type Params = Vec<Box<dyn ToSql + Sync + Send>>;

pub(super) fn refs(p: &Params) -> Vec<&(dyn ToSql + Sync)> {
    p.iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect()
}
