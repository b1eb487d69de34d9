//! Packs on a running node: the [`xyn_web::routes::packs::PackService`] behind
//! `/api/v1/packs`. Uploads are verified and installed exactly as `xyn pack install` does,
//! but the node's actions and blueprint catalogue change in place. One install or removal at
//! a time.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use xyn_core::{ErrorKind, XynError};
use xyn_pack::PackError;
use xyn_web::routes::packs::{PackFuture, PackService};

use crate::pack_install::{self, Live, Target};

pub struct LivePacks {
    live: Arc<Live>,
    data_dir: PathBuf,
    serial: Arc<std::sync::Mutex<()>>,
}

impl LivePacks {
    pub fn new(live: Live, data_dir: PathBuf) -> Self {
        Self {
            live: Arc::new(live),
            data_dir,
            serial: Arc::default(),
        }
    }
}

/// A refusal (stable pack code) as an API error: 422, or 404 for an unknown pack.
fn refused(e: PackError) -> XynError {
    let kind = match e.code {
        "pack.not_found" => ErrorKind::NotFound,
        "pack.in_use" => ErrorKind::Conflict,
        "pack.io" => ErrorKind::Internal,
        _ => ErrorKind::Invalid,
    };
    let mut err = XynError::new(kind, e.code, e.message);
    if let Some(f) = e.file {
        err = err.with_details(serde_json::json!({ "file": f }));
    }
    err
}

fn internal(e: anyhow::Error) -> XynError {
    XynError::new(ErrorKind::Internal, "pack.failed", format!("{e:#}"))
}

impl LivePacks {
    fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Live, &std::path::Path) -> Result<T, XynError> + Send + 'static,
    ) -> PackFuture<T> {
        let live = self.live.clone();
        let dir = self.data_dir.clone();
        let serial = self.serial.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let _one = serial.lock().unwrap_or_else(|p| p.into_inner());
                f(&live, &dir)
            })
            .await
            .map_err(|e| XynError::new(ErrorKind::Internal, "pack.failed", e.to_string()))?
        })
    }
}

impl PackService for LivePacks {
    fn install(
        &self,
        archive: Vec<u8>,
        envelope: Option<Vec<u8>>,
        allow_unsigned: bool,
        actor: String,
    ) -> PackFuture<Value> {
        self.blocking(move |live, dir| {
            let uploads = dir.join("packs");
            std::fs::create_dir_all(&uploads).map_err(|e| internal(e.into()))?;
            let file = uploads.join(format!(".upload-{}.xynpack", uuid::Uuid::now_v7()));
            std::fs::write(&file, &archive).map_err(|e| internal(e.into()))?;
            let r = pack_install::install(
                &file,
                envelope.as_deref(),
                dir,
                Target::Live(live, &actor),
                allow_unsigned,
            );
            let _ = std::fs::remove_file(&file);
            match r {
                Ok(Ok(rec)) => Ok(rec),
                Ok(Err(e)) => Err(refused(e)),
                Err(e) => Err(internal(e)),
            }
        })
    }

    fn list(&self) -> PackFuture<Vec<Value>> {
        let dir = self.data_dir.clone();
        Box::pin(async move { pack_install::installed(&dir).map_err(refused) })
    }

    fn remove(&self, id: String, actor: String) -> PackFuture<()> {
        self.blocking(move |live, dir| {
            match pack_install::remove(&id, dir, Target::Live(live, &actor)) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(refused(e)),
                Err(e) => Err(internal(e)),
            }
        })
    }
}
