//! Pack verification benchmark: builds and signs a pack of about 50 MiB (50 files of 1 MiB
//! of incompressible bytes, plus a manifest), then verifies it — every file's digest, the
//! tree digest, the archive digest and the DSSE signature — several times and prints the
//! figures. Target: one verification of a 50 MiB pack in at most 0.3 s.
//!
//! `cargo bench -p xyn-pack --bench verify [-- --mib 50 --rounds 5]`
#![allow(clippy::print_stdout)]

use std::time::Instant;

use anyhow::{Context, Result};
use xyn_pack::verify::{KeyPolicy, read_envelope, sig_path, sign, verify_pack};

fn arg(name: &str, default: usize) -> Result<usize> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .context("a value after the flag")?
            .parse()
            .with_context(|| format!("{name} takes a number")),
        None => Ok(default),
    }
}

/// Deterministic incompressible bytes (xorshift64*), so runs compare.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// This thread's on-CPU time in seconds (Linux schedstat), so a loaded machine's figure can
/// be told apart from the work itself; `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

fn main() -> Result<()> {
    let mib = arg("--mib", 50)?;
    let rounds = arg("--rounds", 5)?.max(1);
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("specs"))?;
    std::fs::write(
        src.join("xyn-pack.toml"),
        "id = \"bench.big\"\nversion = \"1.0.0\"\nxyn = \"*\"\n",
    )?;
    for i in 0..mib {
        std::fs::write(
            src.join(format!("specs/blob-{i:03}.bin")),
            noise(i as u64 + 1, 1 << 20),
        )?;
    }
    let file = tmp.path().join("big.xynpack");
    let t = Instant::now();
    xyn_pack::build(&src, &file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let build = t.elapsed();
    let key = ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]);
    let t = Instant::now();
    sign(&file, &key).map_err(|e| anyhow::anyhow!("{e}"))?;
    let signing = t.elapsed();
    let size = std::fs::metadata(&file)?.len();
    let policy = KeyPolicy::Only(key.verifying_key());
    let mut times = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..rounds {
        let c = cpu_seconds();
        let t = Instant::now();
        let env = read_envelope(&sig_path(&file)).map_err(|e| anyhow::anyhow!("{e}"))?;
        verify_pack(&file, env.as_deref(), &policy, false).map_err(|e| anyhow::anyhow!("{e}"))?;
        times.push(t.elapsed().as_secs_f64());
        if let (Some(a), Some(b)) = (c, cpu_seconds()) {
            cpu.push(b - a);
        }
    }
    cpu.sort_by(f64::total_cmp);
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let max = times[times.len() - 1];
    println!("# pack verify benchmark\n");
    println!("| what | figure |\n|---|---|");
    println!(
        "| archive | {:.1} MiB ({mib} files of 1 MiB) |",
        size as f64 / 1048576.0
    );
    println!("| build | {:.3} s |", build.as_secs_f64());
    println!("| sign | {:.3} s |", signing.as_secs_f64());
    println!("| verify, median of {rounds} | {median:.3} s |");
    println!("| verify, slowest | {max:.3} s |");
    if let Some(c) = cpu.get(cpu.len() / 2) {
        println!("| verify, median on-CPU time | {c:.3} s |");
    }
    println!(
        "| target | ≤ 0.300 s: {} |",
        if median <= 0.3 { "met" } else { "NOT met" }
    );
    Ok(())
}
