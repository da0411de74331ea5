//! Postern: a forward, caching and load-balancing proxy server.

mod alloc;
mod app;
mod cache;
mod cli;
mod config;
mod context;
mod deadline;
mod egress;
mod error;
mod explain;
mod fasthash;
mod forward;
mod guard;
mod handover;
mod http1;
mod ingress;
mod observe;
mod relay;
mod reverse;

use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: alloc::Mimalloc = alloc::Mimalloc;

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
        Some(Command::Passwd { user, cost }) => passwd(&user, cost),
        Some(Command::Explain {
            client,
            user,
            listener,
            method,
            headers,
            target,
        }) => {
            let config = match load(cli.config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let question = explain::Question {
                client,
                user,
                listener,
                method,
                headers,
                target,
            };
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("postern explain: {e}");
                    return ExitCode::from(2);
                }
            };
            match runtime.block_on(explain::explain(&config, &question)) {
                Ok((report, passes)) => {
                    print!("{report}");
                    if passes {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(3)
                    }
                }
                Err(e) => {
                    eprintln!("postern explain: {e}");
                    ExitCode::from(2)
                }
            }
        }
        None => {
            let config = match load(cli.config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
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

fn load(path: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    let Some(path) = path else {
        return Ok(Config::builtin());
    };
    match Config::load(path) {
        Ok(c) => {
            for w in &c.warnings {
                eprintln!("{w}");
            }
            Ok(c)
        }
        Err(e) => {
            eprintln!("{e}");
            Err(ExitCode::from(1))
        }
    }
}

/// `postern passwd USER`: one htpasswd line on standard output.
fn passwd(user: &str, cost: u32) -> ExitCode {
    let password = match read_password() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("postern passwd: cannot read the password: {e}");
            return ExitCode::from(2);
        }
    };
    if password.is_empty() {
        eprintln!("postern passwd: the password is empty");
        return ExitCode::from(2);
    }
    match postern_policy::htpasswd::bcrypt_line(user, &password, cost) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("postern passwd: {e}");
            ExitCode::from(2)
        }
    }
}

/// One line from standard input; on a terminal, asked for without echo.
fn read_password() -> std::io::Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    if terminal {
        eprint!("Password: ");
        let _ = std::io::stderr().flush();
    }
    let echo = terminal.then(terminal_echo_off).flatten();
    let mut line = String::new();
    let res = stdin.lock().read_line(&mut line);
    if let Some(saved) = echo {
        restore_terminal(saved);
        eprintln!();
    }
    res?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn terminal_echo_off() -> Option<libc::termios> {
    #[allow(unsafe_code)]
    // SAFETY: tcgetattr/tcsetattr read and write the struct passed by pointer;
    // a zeroed termios is a valid value for tcgetattr to fill.
    unsafe {
        let mut saved: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut saved) != 0 {
            return None;
        }
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        (libc::tcsetattr(0, libc::TCSANOW, &quiet) == 0).then_some(saved)
    }
}

fn restore_terminal(saved: libc::termios) {
    #[allow(unsafe_code)]
    // SAFETY: restores the attributes read by tcgetattr above.
    unsafe {
        libc::tcsetattr(0, libc::TCSANOW, &saved);
    }
}
