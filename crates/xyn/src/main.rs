//! `xyn`: the one binary. `xyn serve` runs a node; the other commands talk to a running node
//! over its API (`--url`), except `blueprint validate` (local) and `audit verify` (opens the
//! data directory directly).

mod action_cmd;
mod action_watch;
mod app_cmd;
mod backup;
mod cli;
mod client;
mod config;
mod datadir;
mod doctor;
mod nats;
mod output;
mod pack_cmd;
mod pack_install;
mod pack_live;
mod retention;
mod run_ops;
mod secret_cmd;
mod serve;
mod slo_cmd;
mod spec_cmd;
mod tls_cmd;
mod workcells;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
