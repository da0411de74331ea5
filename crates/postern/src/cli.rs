//! Command line: `postern [-c FILE]`, `postern check -c FILE`, `postern --version`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "postern",
    version,
    about = "A forward, caching and load-balancing proxy server",
    long_about = "A forward, caching and load-balancing proxy server.\n\nWith no configuration file, Postern runs a forward proxy on 127.0.0.1:3128 for loopback clients."
)]
pub struct Cli {
    /// Configuration file (TOML)
    #[arg(short = 'c', long = "config", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration and exit: 0 if valid, 1 with FILE:LINE:COL: message per problem
    Check,
}
