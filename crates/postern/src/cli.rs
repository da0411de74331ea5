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
    /// Print an htpasswd line with a bcrypt hash for USER (the password is read from standard input)
    Passwd {
        user: String,
        /// bcrypt cost (4-31); each step doubles the work
        #[arg(long, default_value_t = 10)]
        cost: u32,
    },
    /// Show what the proxy would do with a request: the decision, the rule and list behind it,
    /// and the request head sent upstream. Exit 0 if it would pass, 3 if refused.
    Explain {
        /// The client's address
        #[arg(long, value_name = "ADDR")]
        client: std::net::IpAddr,
        /// Treat the client as authenticated as this user
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// The listener the request arrives on (default: the first)
        #[arg(long, value_name = "NAME")]
        listener: Option<String>,
        /// Request method for URLs
        #[arg(short = 'X', long, default_value = "GET")]
        method: String,
        /// A request header, `Name: value` (repeatable)
        #[arg(short = 'H', long = "header", value_name = "HEADER")]
        headers: Vec<String>,
        /// An absolute URL (`http://host/path`) or HOST:PORT for a CONNECT tunnel
        target: String,
    },
}
