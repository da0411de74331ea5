//! Apache-style user files (`htpasswd`) and group files (`AuthGroupFile`) for proxy
//! authentication.
//!
//! Owns parsing both formats and checking passwords against bcrypt (`$2y$`, `$2b$`,
//! `$2a$`), Apache MD5 (`$apr1$`) and `{SHA}` hashes. Parsing is strict: a user file with
//! any malformed line or weak hash format is rejected whole, so a typo cannot silently
//! lock a user out and a plain-text or DES password is never accepted.
//!
//! bcrypt checks cost milliseconds by design (about 50 ms at cost 10); callers on an
//! async runtime should run [`Htpasswd::verify`] off the reactor threads.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;

use base64::Engine;
use md5::{Digest, Md5};
use sha1::Sha1;

use crate::blocklist::LineProblem;

/// Apache's `htpasswd -B` default.
pub const DEFAULT_BCRYPT_COST: u32 = 10;

const USE_BCRYPT: &str = "use bcrypt (postern passwd)";
/// The alphabet of crypt(3), bcrypt and apr1 hashes, in apr1's encoding order.
const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// bcrypt only reads this many bytes of a password.
const BCRYPT_MAX_PASSWORD: usize = 72;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HtpasswdError {
    #[error(
        "user name {0:?} must be non-empty, not start with '#' and contain no ':' or control characters"
    )]
    BadUser(String),
    #[error("bcrypt cost {0} is out of range (4 to 31)")]
    BadCost(u32),
    /// bcrypt ignores everything past 72 bytes, which would make a longer password
    /// weaker than it looks.
    #[error("password is {0} bytes long; bcrypt uses at most 72")]
    PasswordTooLong(usize),
    #[error("could not hash the password: {0}")]
    Hash(String),
}

#[derive(Clone)]
enum Stored {
    /// The whole `$2y$NN$...` string, checked well-formed at parse time.
    Bcrypt(Box<str>),
    Apr1 {
        salt: Box<[u8]>,
        digest: [u8; 22],
    },
    Sha1([u8; 20]),
}

/// A parsed user file: user name to password hash.
#[derive(Clone, Default)]
pub struct Htpasswd {
    users: HashMap<String, Stored>,
}

impl Htpasswd {
    /// Every malformed or unsupported line is an error naming its line; any problem =>
    /// Err (a config error).
    ///
    /// Empty lines and lines starting with `#` are ignored; trailing whitespace (a `\r`
    /// included) is dropped. As in Apache, anything after a second `:` is ignored.
    /// Messages never quote the hash, which may be a plain-text password.
    pub fn parse(text: &str) -> Result<Htpasswd, Vec<LineProblem>> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut users = HashMap::new();
        let mut first_seen: HashMap<&str, usize> = HashMap::new();
        let mut problems = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let mut problem = |message: String| problems.push(LineProblem { line, message });
            let text = raw.trim_end();
            if text.is_empty() || text.trim_start().starts_with('#') {
                continue;
            }
            let Some((user, rest)) = text.split_once(':') else {
                problem("no ':' between user name and password hash".to_string());
                continue;
            };
            let hash = rest.split(':').next().unwrap_or_default();
            if user.is_empty() {
                problem("empty user name".to_string());
                continue;
            }
            if user.chars().any(char::is_control) {
                problem(format!("user name {user:?} contains control characters"));
                continue;
            }
            let stored = match classify(hash) {
                Ok(stored) => stored,
                Err(why) => {
                    problem(format!("user {user:?}: {why}"));
                    continue;
                }
            };
            match first_seen.entry(user) {
                Entry::Occupied(first) => {
                    problem(format!(
                        "duplicate user {user:?} (first on line {})",
                        first.get()
                    ));
                }
                Entry::Vacant(slot) => {
                    slot.insert(line);
                    users.insert(user.to_string(), stored);
                }
            }
        }
        if problems.is_empty() {
            Ok(Htpasswd { users })
        } else {
            Err(problems)
        }
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Verifies a password. Unknown user => false. Never panics, whatever the stored
    /// hash or input. SHA and apr1 comparisons are constant-time (compare all bytes).
    ///
    /// As with every bcrypt implementation, only the first 72 bytes of the password count.
    ///
    /// An unknown user costs as much as a known one (the password is checked against
    /// another user's hash and the answer dropped), so the time taken does not tell
    /// which user names exist.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self.users.get(user) {
            Some(stored) => matches(stored, password),
            None => {
                if let Some(decoy) = self.users.values().next() {
                    std::hint::black_box(matches(decoy, password));
                }
                false
            }
        }
    }
}

/// Whether `password` matches a stored hash.
fn matches(stored: &Stored, password: &str) -> bool {
    match stored {
        Stored::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
        Stored::Apr1 { salt, digest } => constant_time_eq(&apr1(password.as_bytes(), salt), digest),
        Stored::Sha1(digest) => constant_time_eq(&Sha1::digest(password.as_bytes()), digest),
    }
}

impl fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Htpasswd")
            .field("users", &self.users.len())
            .finish()
    }
}

/// An htpasswd line `user:$2y$...` with a bcrypt hash of `password` at `cost` (4..=31;
/// [`DEFAULT_BCRYPT_COST`] is Apache's default), in the `$2y$` form `htpasswd -B` writes.
///
/// The salt comes from the operating system's random source. Err for a user name that is
/// empty, starts with `#` (the line would read as a comment) or contains `:` or control
/// characters, and for a password longer than bcrypt's 72 bytes.
pub fn bcrypt_line(user: &str, password: &str, cost: u32) -> Result<String, HtpasswdError> {
    if user.is_empty()
        || user.starts_with('#')
        || user.contains(':')
        || user.chars().any(char::is_control)
    {
        return Err(HtpasswdError::BadUser(user.to_string()));
    }
    if !(4..=31).contains(&cost) {
        return Err(HtpasswdError::BadCost(cost));
    }
    if password.len() > BCRYPT_MAX_PASSWORD {
        return Err(HtpasswdError::PasswordTooLong(password.len()));
    }
    let parts =
        bcrypt::hash_with_result(password, cost).map_err(|e| HtpasswdError::Hash(e.to_string()))?;
    Ok(format!(
        "{user}:{}",
        parts.format_for_version(bcrypt::Version::TwoY)
    ))
}

/// Recognises a stored hash, or says why it is refused.
fn classify(hash: &str) -> Result<Stored, String> {
    if hash.is_empty() {
        return Err("empty password hash".to_string());
    }
    if ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)) {
        return parse_bcrypt(hash).map(|()| Stored::Bcrypt(hash.into()));
    }
    if let Some(rest) = hash.strip_prefix("$apr1$") {
        return parse_apr1(rest);
    }
    if let Some(encoded) = hash.strip_prefix("{SHA}") {
        return match base64::engine::general_purpose::STANDARD.decode(encoded) {
            Ok(bytes) => match <[u8; 20]>::try_from(bytes.as_slice()) {
                Ok(digest) => Ok(Stored::Sha1(digest)),
                Err(_) => Err("malformed {SHA} hash: not 20 bytes".to_string()),
            },
            Err(_) => Err("malformed {SHA} hash: not valid base64".to_string()),
        };
    }
    let format = if hash.starts_with("$2x$") {
        "bcrypt $2x$ (a legacy variant)"
    } else if hash.starts_with("$1$") {
        "MD5-crypt ($1$)"
    } else if hash.starts_with("$5$") {
        "SHA-256-crypt ($5$)"
    } else if hash.starts_with("$6$") {
        "SHA-512-crypt ($6$)"
    } else if hash.starts_with('$') {
        "unknown $-prefixed scheme"
    } else if hash.len() == 13 && hash.bytes().all(|b| ITOA64.contains(&b)) {
        "crypt(3) DES"
    } else {
        "not a known hash (plain-text passwords are not accepted)"
    };
    Err(format!("unsupported hash format: {format}; {USE_BCRYPT}"))
}

/// Checks `$2y$NN$` + 22 salt characters + 31 hash characters, so that verification
/// can only fail by mismatch, never on a malformed hash.
fn parse_bcrypt(hash: &str) -> Result<(), String> {
    let b = hash.as_bytes();
    if b.len() != 60 {
        return Err("malformed bcrypt hash: expected 60 ASCII characters".to_string());
    }
    if !(b[4].is_ascii_digit() && b[5].is_ascii_digit() && b[6] == b'$') {
        return Err("malformed bcrypt hash: expected a two-digit cost".to_string());
    }
    let cost = u32::from(b[4] - b'0') * 10 + u32::from(b[5] - b'0');
    if !(4..=31).contains(&cost) {
        return Err(format!("bcrypt cost {cost:02} is out of range (04 to 31)"));
    }
    let (salt, digest) = b[7..].split_at(22);
    if !b[7..].iter().all(|c| ITOA64.contains(c)) {
        return Err("malformed bcrypt hash: unexpected character".to_string());
    }
    let salt_ok = bcrypt::BASE_64.decode(salt).is_ok_and(|s| s.len() == 16);
    let digest_ok = bcrypt::BASE_64.decode(digest).is_ok_and(|d| d.len() == 23);
    if !(salt_ok && digest_ok) {
        return Err("malformed bcrypt hash: salt or hash is not canonical".to_string());
    }
    Ok(())
}

/// `salt$digest` after `$apr1$`.
fn parse_apr1(rest: &str) -> Result<Stored, String> {
    let Some((salt, digest)) = rest.split_once('$') else {
        return Err("malformed apr1 hash: expected $apr1$salt$hash".to_string());
    };
    if salt.is_empty() || salt.len() > 8 || !salt.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("malformed apr1 hash: salt must be 1 to 8 printable characters".to_string());
    }
    let digest = <[u8; 22]>::try_from(digest.as_bytes())
        .ok()
        .filter(|d| d.iter().all(|c| ITOA64.contains(c)))
        .ok_or_else(|| "malformed apr1 hash: expected 22 hash characters".to_string())?;
    Ok(Stored::Apr1 {
        salt: salt.as_bytes().into(),
        digest,
    })
}

/// Apache's MD5 crypt (`apr_md5_encode`): the FreeBSD MD5-crypt algorithm with the magic
/// `$apr1$`. Returns the 22-character encoded digest.
fn apr1(password: &[u8], salt: &[u8]) -> [u8; 22] {
    const MAGIC: &[u8] = b"$apr1$";
    let alternate = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut ctx = Md5::new()
        .chain_update(password)
        .chain_update(MAGIC)
        .chain_update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alternate[..n]);
        left -= n;
    }
    // An odd quirk of the original: a zero byte for set bits, the first password byte
    // for clear ones.
    let mut bits = password.len();
    while bits != 0 {
        if bits & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(password.get(..1).unwrap_or_default());
        }
        bits >>= 1;
    }
    let mut fin = ctx.finalize();
    // Deliberately slow: 1000 more rounds.
    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(fin);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(fin);
        } else {
            c.update(password);
        }
        fin = c.finalize();
    }
    let f: [u8; 16] = fin.into();
    let mut out = [0u8; 22];
    let groups = [
        (f[0], f[6], f[12]),
        (f[1], f[7], f[13]),
        (f[2], f[8], f[14]),
        (f[3], f[9], f[15]),
        (f[4], f[10], f[5]),
    ];
    for (i, (a, b, c)) in groups.into_iter().enumerate() {
        let v = (u32::from(a) << 16) | (u32::from(b) << 8) | u32::from(c);
        for k in 0..4 {
            out[i * 4 + k] = ITOA64[((v >> (6 * k)) & 0x3f) as usize];
        }
    }
    let v = u32::from(f[11]);
    out[20] = ITOA64[(v & 0x3f) as usize];
    out[21] = ITOA64[(v >> 6) as usize];
    out
}

/// Compares every byte whatever the first difference, so timing does not reveal how much
/// of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A parsed group file (Apache `AuthGroupFile`): `group: user1 user2` per line.
#[derive(Debug, Clone, Default)]
pub struct Groups {
    /// User to group names, in file order.
    by_user: HashMap<String, Vec<String>>,
}

impl Groups {
    /// Empty lines and `#` comments are ignored. A group may appear on several lines;
    /// its members add up, as in Apache.
    pub fn parse(text: &str) -> Result<Groups, Vec<LineProblem>> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut by_user: HashMap<String, Vec<String>> = HashMap::new();
        let mut problems = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let text = raw.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            let Some((group, members)) = text.split_once(':') else {
                problems.push(LineProblem {
                    line,
                    message: "expected `group: user1 user2`".to_string(),
                });
                continue;
            };
            let group = group.trim();
            if group.is_empty() {
                problems.push(LineProblem {
                    line,
                    message: "empty group name".to_string(),
                });
                continue;
            }
            if group.chars().any(|c| c.is_whitespace() || c.is_control()) {
                problems.push(LineProblem {
                    line,
                    message: format!("group name {group:?} contains spaces or control characters"),
                });
                continue;
            }
            for user in members.split_whitespace() {
                let groups = by_user.entry(user.to_string()).or_default();
                if !groups.iter().any(|g| g == group) {
                    groups.push(group.to_string());
                }
            }
        }
        if problems.is_empty() {
            Ok(Groups { by_user })
        } else {
            Err(problems)
        }
    }

    /// Group names a user belongs to, in file order (empty slice if none).
    pub fn of(&self, user: &str) -> &[String] {
        self.by_user.get(user).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Produced by `openssl passwd -apr1 -salt SALT PASSWORD` and
    // `printf %s PASSWORD | openssl sha1 -binary | base64`.
    const APR1_HORSE: &str = "$apr1$Xy12Ab34$vhjQcpjVA4WkmhIIZjQgk0"; // "correct horse"
    const APR1_EMPTY: &str = "$apr1$a$lsAcX0kKaMIVmrCtUuk5b0"; // ""
    const APR1_LONG: &str = "$apr1$12345678$XObvhzOVxtjcrisR.5W301"; // see below
    const LONG: &str = "a much longer password that exceeds sixteen bytes";
    const SHA_HORSE: &str = "{SHA}L55TUjtiq8FBorTWAZ0jy6g129A="; // "correct horse"
    // From the crypt_blowfish test vectors: password "U*U".
    const BCRYPT_UU: &str = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";

    fn parse_err(text: &str) -> Vec<LineProblem> {
        match Htpasswd::parse(text) {
            Ok(h) => panic!("expected errors, got {h:?}"),
            Err(p) => p,
        }
    }

    #[test]
    fn apr1_matches_openssl() {
        let file = format!("horse:{APR1_HORSE}\nempty:{APR1_EMPTY}\nlong:{APR1_LONG}\n");
        let h = Htpasswd::parse(&file).unwrap();
        assert_eq!(h.len(), 3);
        assert!(h.verify("horse", "correct horse"));
        assert!(!h.verify("horse", "correct horse "));
        assert!(!h.verify("horse", ""));
        assert!(h.verify("empty", ""));
        assert!(!h.verify("empty", "x"));
        assert!(h.verify("long", LONG));
        assert!(!h.verify("long", &LONG[1..]));
    }

    /// An unknown user name takes as long to refuse as a wrong password: a
    /// bcrypt check at cost 10 takes tens of milliseconds, so an unknown user
    /// answered at once would stand out by orders of magnitude.
    #[test]
    fn unknown_users_cost_a_password_check() {
        let line = bcrypt_line("alice", "secret", 10).unwrap();
        let h = Htpasswd::parse(&line).unwrap();
        let fastest = |user: &str| {
            (0..3)
                .map(|_| {
                    let t = std::time::Instant::now();
                    assert!(!h.verify(user, "wrong"));
                    t.elapsed()
                })
                .min()
                .unwrap()
        };
        let (known, unknown) = (fastest("alice"), fastest("nobody"));
        assert!(
            unknown * 4 > known,
            "unknown user refused in {unknown:?}, a wrong password in {known:?}"
        );
    }

    #[test]
    fn sha_matches_openssl() {
        let h = Htpasswd::parse(&format!("bob:{SHA_HORSE}\r\n")).unwrap();
        assert!(h.verify("bob", "correct horse"));
        assert!(!h.verify("bob", "correct horsE"));
        assert!(!h.verify("alice", "correct horse"));
    }

    #[test]
    fn bcrypt_known_vector() {
        let h = Htpasswd::parse(&format!("u:{BCRYPT_UU}\n")).unwrap();
        assert!(h.verify("u", "U*U"));
        assert!(!h.verify("u", "U*U*"));
    }

    #[test]
    fn bcrypt_line_round_trips() {
        let line = bcrypt_line("carol", "s3cret", 4).unwrap();
        assert!(line.starts_with("carol:$2y$04$"), "{line}");
        assert_eq!(line.len(), "carol:".len() + 60);
        let h = Htpasswd::parse(&line).unwrap();
        assert!(h.contains("carol"));
        assert!(h.verify("carol", "s3cret"));
        assert!(!h.verify("carol", "s3cre"));
        assert!(!h.verify("dave", "s3cret"));
        // The same hash under the other accepted prefixes.
        let hash = &line["carol:".len()..];
        for prefix in ["$2b$", "$2a$"] {
            let other = format!("c:{prefix}{}", &hash[4..]);
            assert!(Htpasswd::parse(&other).unwrap().verify("c", "s3cret"));
        }
    }

    #[test]
    fn bcrypt_line_rejects_bad_input() {
        for user in ["", "a:b", "a\nb", "a\u{7f}", "#x"] {
            assert_eq!(
                bcrypt_line(user, "pw", 4),
                Err(HtpasswdError::BadUser(user.to_string()))
            );
        }
        assert_eq!(bcrypt_line("u", "pw", 3), Err(HtpasswdError::BadCost(3)));
        assert_eq!(bcrypt_line("u", "pw", 32), Err(HtpasswdError::BadCost(32)));
        assert_eq!(
            bcrypt_line("u", &"x".repeat(73), 4),
            Err(HtpasswdError::PasswordTooLong(73))
        );
        assert!(bcrypt_line("u", &"x".repeat(72), 4).is_ok());
        assert!(bcrypt_line("ünïcode user", "pw", 4).is_ok());
    }

    #[test]
    fn comments_blank_lines_and_extra_fields() {
        let text = format!("# users\n\n   \nhorse:{APR1_HORSE}:comment\n  # indented\n");
        let h = Htpasswd::parse(&text).unwrap();
        assert_eq!(h.len(), 1);
        assert!(h.verify("horse", "correct horse"));
        assert!(Htpasswd::parse("").unwrap().is_empty());
    }

    #[test]
    fn rejected_formats_name_their_line() {
        let cases: &[(&str, &str)] = &[
            ("plain:secret", "plain-text"),
            ("des:rqXexS6ZhobKA", "crypt(3) DES"),
            ("md5:$1$abc$Kb85XxsXB.VXinPhbS4431", "MD5-crypt"),
            (
                "s256:$5$abc$/LKlXd6vuvdFX3oWbf2vGk3DgflzzsvOtMZsiOxqqY5",
                "SHA-256-crypt",
            ),
            ("s512:$6$abc$MtSdWSZbhct2oe", "SHA-512-crypt"),
            (
                "x2:$2x$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
                "$2x$",
            ),
            ("argon:$argon2id$v=19$m=65536", "unknown $-prefixed"),
            ("empty:", "empty password hash"),
            ("nocolon", "no ':'"),
            (":$apr1$a$lsAcX0kKaMIVmrCtUuk5b0", "empty user name"),
            (
                "ctl\u{1}:{SHA}L55TUjtiq8FBorTWAZ0jy6g129A=",
                "control characters",
            ),
            ("b1:$2y$05$CCCC", "expected 60"),
            (
                "b2:$2y$03$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
                "out of range",
            ),
            (
                "b3:$2y$32$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
                "out of range",
            ),
            (
                "b4:$2y$x5$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
                "two-digit cost",
            ),
            (
                "b5:$2y$05$CCCCCCCCCCCCCCCCCCCCC!E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
                "unexpected character",
            ),
            (
                "b6:$2y$05$CCCCCCCCCCCCCCCCCCCCCCE5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
                "not canonical",
            ),
            (
                "b7:$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeé",
                "expected 60",
            ),
            ("a1:$apr1$nosalt", "expected $apr1$salt$hash"),
            ("a2:$apr1$$lsAcX0kKaMIVmrCtUuk5b0", "salt"),
            ("a3:$apr1$123456789$lsAcX0kKaMIVmrCtUuk5b0", "salt"),
            ("a4:$apr1$a$short", "22 hash characters"),
            ("a5:$apr1$a$lsAcX0kKaMIVmrCtUuk5b!", "22 hash characters"),
            ("s1:{SHA}not base64!", "not valid base64"),
            ("s2:{SHA}YWJj", "not 20 bytes"),
        ];
        let mut text = String::from("# header\nok:{SHA}L55TUjtiq8FBorTWAZ0jy6g129A=\n");
        for (line, _) in cases {
            text.push_str(line);
            text.push('\n');
        }
        let problems = parse_err(&text);
        assert_eq!(problems.len(), cases.len(), "{problems:#?}");
        for (i, ((_, expected), problem)) in cases.iter().zip(&problems).enumerate() {
            assert_eq!(problem.line, i + 3, "{problem}");
            assert!(
                problem.message.contains(expected),
                "line {}: {:?} lacks {expected:?}",
                problem.line,
                problem.message
            );
        }
        // Hashes, possibly plain-text passwords, never reach messages.
        assert!(problems.iter().all(|p| !p.message.contains("secret")));
        assert!(problems[1].message.ends_with("use bcrypt (postern passwd)"));
        assert_eq!(
            problems[1].to_string(),
            "line 4: user \"des\": unsupported hash format: crypt(3) DES; use bcrypt (postern passwd)"
        );
    }

    #[test]
    fn duplicate_user_is_an_error() {
        let text = format!("a:{SHA_HORSE}\nb:{SHA_HORSE}\na:{APR1_HORSE}\n");
        let problems = parse_err(&text);
        assert_eq!(
            problems,
            vec![LineProblem {
                line: 3,
                message: "duplicate user \"a\" (first on line 1)".to_string()
            }]
        );
    }

    #[test]
    fn verify_never_panics_on_odd_input() {
        let h =
            Htpasswd::parse(&format!("a:{APR1_HORSE}\ns:{SHA_HORSE}\nb:{BCRYPT_UU}\n")).unwrap();
        for user in ["a", "s", "b", "", "zz"] {
            for pw in ["", "\0", "é\u{10ffff}", &"x".repeat(10_000)] {
                assert!(!h.verify(user, pw));
            }
        }
    }

    #[test]
    fn groups_parse_in_file_order() {
        let g = Groups::parse(
            "# groups\nadmins: alice bob\r\n\nstaff:alice  carol\n  empty:\nadmins: dave alice\n",
        )
        .unwrap();
        assert_eq!(g.of("alice"), ["admins", "staff"]);
        assert_eq!(g.of("bob"), ["admins"]);
        assert_eq!(g.of("carol"), ["staff"]);
        assert_eq!(g.of("dave"), ["admins"]);
        assert!(g.of("nobody").is_empty());
        assert!(g.of("").is_empty());
    }

    #[test]
    fn groups_rejections() {
        let p = Groups::parse("ok: a\nno colon here\n: a b\nmy group: a\n").unwrap_err();
        let lines: Vec<usize> = p.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![2, 3, 4]);
        assert!(p[0].message.contains("expected"));
        assert!(p[1].message.contains("empty group name"));
        assert!(p[2].message.contains("spaces"));
    }
}
