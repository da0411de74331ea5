//! Postern: a forward, caching and load-balancing proxy server.

mod app;
mod cli;
mod config;
mod context;
mod egress;
mod error;
mod forward;
mod guard;
mod http1;
mod ingress;
mod observe;
mod relay;

use std::process::ExitCode;

/// Many short-lived buffers per request: mimalloc's thread-local free lists
/// cost a fraction of the system allocator's consolidation work.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::config::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check) => {
            let Some(path) = cli.config else {
                eprintln!("postern check: give the file to check with -c FILE");
                return ExitCode::from(2);
            };
            match Config::load(&path) {
                Ok(c) => {
                    for w in &c.warnings {
                        eprintln!("{w}");
                    }
                    println!("{}: configuration is valid", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        None => {
            let config = match &cli.config {
                Some(path) => match Config::load(path) {
                    Ok(c) => {
                        for w in &c.warnings {
                            eprintln!("{w}");
                        }
                        c
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(1);
                    }
                },
                None => Config::builtin(),
            };
            match app::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("postern: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
