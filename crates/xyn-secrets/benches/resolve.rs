#![allow(clippy::unwrap_used)]
//! Secret resolution cost per step: a warm read of a secret from the encrypted local store on
//! SQLite (served from the resolve cache, which any write through the node empties), the same
//! read with the cache off (row read, data-key unwrap, value decrypt: the baseline), and the
//! environment backend.
//! `cargo bench -p xyn-secrets --bench resolve`

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use xyn_secrets::env::EnvSecretStore;
use xyn_secrets::local::{KeySource, LocalSecretStore};
use xyn_secrets::{SecretPath, SecretStore, SecretValue, Secrets};
use xyn_store::sqlite::{SqliteConfig, SqliteStore};

fn resolve(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(SqliteStore::open(dir.path().join("xyn.db"), SqliteConfig::default()).unwrap());
    let local = Arc::new(LocalSecretStore::new(
        store,
        KeySource::KeyFile(dir.path().join("secrets.key")),
    ));
    let path = SecretPath::parse("sys/bench/providers/openai").unwrap();
    let env_path = SecretPath::parse("sys/bench/providers/env").unwrap();
    let env = Arc::new(EnvSecretStore::from_vars([(
        env_path.env_var(),
        "sk-env-0123456789".to_string(),
    )]));
    let secrets = Secrets::new(local.clone(), env.clone());
    let uncached = Secrets::with_cache_ttl(local.clone(), env, std::time::Duration::ZERO);
    rt.block_on(async {
        for i in 0..20 {
            let p = SecretPath::parse(&format!("team/bench/s{i}")).unwrap();
            local
                .put(
                    &p,
                    &SecretValue::new(format!("value-{i}-0123456789")).unwrap(),
                    "bench",
                )
                .await
                .unwrap();
        }
        local
            .put(
                &path,
                &SecretValue::new("sk-local-0123456789abcdef".into()).unwrap(),
                "bench",
            )
            .await
            .unwrap();
        // Warm: the master key is unlocked once.
        secrets.resolve(&path).await.unwrap().unwrap();
    });
    let mut g = c.benchmark_group("secret_resolution");
    g.bench_function("local_sqlite_warm", |b| {
        b.to_async(&rt)
            .iter(|| async { secrets.resolve(&path).await.unwrap().unwrap() })
    });
    g.bench_function("local_sqlite_uncached", |b| {
        b.to_async(&rt)
            .iter(|| async { uncached.resolve(&path).await.unwrap().unwrap() })
    });
    g.bench_function("env_fallback", |b| {
        b.to_async(&rt)
            .iter(|| async { secrets.resolve(&env_path).await.unwrap().unwrap() })
    });
    g.finish();
}

criterion_group!(benches, resolve);
criterion_main!(benches);
