//! Credentials checked by an external program, with Squid's basic
//! authentication helper protocol, so the helpers Squid users already run
//! (`basic_ldap_auth`, `basic_pam_auth`, `basic_radius_auth`,
//! `basic_ncsa_auth`, their own scripts) work unchanged: one line
//! `USER PASSWORD` per check, each URL-encoded (RFC 1738), answered by one
//! line starting with `OK` (valid), `ERR` (invalid) or `BH` (the helper
//! failed).
//!
//! Up to `children` copies run at once, started on first use and kept
//! running; each answers one check at a time. A copy that answers something
//! else, exits or takes longer than `timeout` is stopped and replaced.

use std::fmt;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::Semaphore;

/// What the program said about a user and password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    Invalid,
    /// No answer could be had: why.
    Unavailable(String),
}

/// The longest answer line read from a helper.
const MAX_ANSWER: u64 = 8 * 1024;

pub struct AuthProgram {
    /// The program and its arguments.
    argv: Vec<String>,
    timeout: Duration,
    /// One permit per copy that may run.
    slots: Semaphore,
    /// Copies running and waiting for a check.
    idle: Mutex<Vec<Helper>>,
}

struct Helper {
    /// Stopped (SIGKILL) when dropped.
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<tokio::io::Take<ChildStdout>>,
}

impl fmt::Debug for AuthProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthProgram")
            .field("argv", &self.argv)
            .finish()
    }
}

impl AuthProgram {
    pub fn new(argv: Vec<String>, children: usize, timeout: Duration) -> AuthProgram {
        AuthProgram {
            argv,
            timeout,
            slots: Semaphore::new(children),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Asks a copy of the program about `user` and `password`, waiting for
    /// a free one when all are busy; `timeout` bounds the wait and the answer.
    pub async fn verify(&self, user: &str, password: &str) -> Verdict {
        // As Squid: an empty password is refused before any program sees it
        // (to LDAP it would be an anonymous bind, which many servers allow).
        if password.is_empty() {
            return Verdict::Invalid;
        }
        let line = format!("{} {}\n", encode(user), encode(password));
        match tokio::time::timeout(self.timeout, self.ask(&line)).await {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(why)) => self.unavailable(why),
            Err(_) => self.unavailable(format!("no answer within {:?}", self.timeout)),
        }
    }

    async fn ask(&self, line: &str) -> Result<Verdict, String> {
        let Ok(_slot) = self.slots.acquire().await else {
            return Err("the program is stopping".into());
        };
        // A kept copy may have exited since its last answer: then the
        // question goes to a fresh one, and the client never sees it.
        let mut reused = self.idle_copy();
        loop {
            let mut helper = match reused.take() {
                Some(h) => (h, true),
                None => match self.start() {
                    Ok(h) => (h, false),
                    Err(e) => return Err(format!("cannot start it: {e}")),
                },
            };
            let answer = match exchange(&mut helper.0, line).await {
                Ok(answer) => answer,
                Err(_) if helper.1 => continue,
                Err(e) => return Err(e),
            };
            let word = answer
                .split(|b| *b == b' ')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            let verdict = match word {
                b"OK" => Verdict::Valid,
                b"ERR" => Verdict::Invalid,
                b"BH" => {
                    return Err(format!(
                        "it reported a failure: {}",
                        String::from_utf8_lossy(&answer)
                    ));
                }
                _ => {
                    return Err(format!(
                        "unexpected answer {:?}",
                        String::from_utf8_lossy(&answer)
                    ));
                }
            };
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(helper.0);
            return Ok(verdict);
        }
    }

    /// A kept copy that is still running (the exited ones are collected).
    fn idle_copy(&self) -> Option<Helper> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(mut h) = idle.pop() {
            if matches!(h.child.try_wait(), Ok(None)) {
                return Some(h);
            }
        }
        None
    }

    /// Says on stderr why a check failed (the copy that failed is dropped,
    /// and so stopped).
    fn unavailable(&self, why: String) -> Verdict {
        let program = self.argv.first().map_or("", String::as_str);
        eprintln!("postern: auth program {program}: {why}");
        Verdict::Unavailable(why)
    }

    fn start(&self) -> std::io::Result<Helper> {
        let (program, args) = self
            .argv
            .split_first()
            .ok_or_else(|| std::io::Error::other("no program"))?;
        let mut command = tokio::process::Command::new(program);
        for name in crate::handover::PRIVATE_ENVIRONMENT {
            command.env_remove(name);
        }
        let mut child = command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Its messages go where Postern's own go (as Squid's cache.log).
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        Ok(Helper {
            child,
            stdin,
            stdout: BufReader::new(stdout.take(MAX_ANSWER)),
        })
    }
}

/// One question and its answer line (without the newline).
async fn exchange(helper: &mut Helper, line: &str) -> Result<Vec<u8>, String> {
    let io = async {
        helper.stdin.write_all(line.as_bytes()).await?;
        helper.stdin.flush().await?;
        let mut answer = Vec::new();
        helper.stdout.read_until(b'\n', &mut answer).await?;
        // A fresh budget for the next answer.
        helper.stdout.get_mut().set_limit(MAX_ANSWER);
        Ok::<_, std::io::Error>(answer)
    };
    let mut answer = io.await.map_err(|e| e.to_string())?;
    if answer.pop() != Some(b'\n') {
        return Err("it closed its output".into());
    }
    Ok(answer)
}

/// RFC 1738 encoding as Squid's helpers decode it: every byte but letters,
/// digits and `-._~` as `%XX`, so a space or a newline in a password cannot
/// end a field or a line.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_cannot_break_the_line() {
        assert_eq!(encode("alice"), "alice");
        assert_eq!(encode("a b\nc%"), "a%20b%0Ac%25");
        assert_eq!(encode("é"), "%C3%A9");
    }
}
