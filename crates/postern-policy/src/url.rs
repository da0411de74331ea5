//! URLs as rules see them: one spelling per resource, so that a URL rule
//! (`url_regex`, `url_ext`, blocklist URL patterns) or a route's path cannot
//! be walked around by writing the same path differently.
//!
//! The request goes on as the client wrote it; only what rules match is
//! normalised, in the ways RFC 3986 §6.2.2 calls equivalent, plus one that
//! servers treat alike (as nginx's `merge_slashes` does):
//! - percent-encoded unreserved characters are decoded (`%61` is `a`,
//!   `%2E` is `.`), other escapes get upper-case hex (§6.2.2.1, §6.2.2.2);
//! - `.` and `..` segments are removed (§6.2.2.3, §5.2.4);
//! - runs of `/` in the path become one.
//!
//! Reserved characters stay encoded: `%2F` is not a `/` (§2.2).

use std::borrow::Cow;

/// The path and query of an origin-form target, normalised; borrowed when
/// it is normal already. A target that is not a path (`*`) is returned as it is.
pub fn normalize_path_and_query(target: &str) -> Cow<'_, str> {
    if !target.starts_with('/') {
        return Cow::Borrowed(target);
    }
    if is_normal(target.as_bytes()) {
        return Cow::Borrowed(target);
    }
    let (path, query) = match target.find('?') {
        Some(q) => (&target[..q], Some(&target[q..])),
        None => (target, None),
    };
    let mut out = clean_path(&decode_unreserved(path));
    if let Some(q) = query {
        out.push_str(&decode_unreserved(q));
    }
    Cow::Owned(out)
}

/// Whether a target (starting with `/`) is normal already: no `%` at all,
/// and in its path no `//` and no `.` or `..` segment. One pass over the
/// bytes: this runs for every request a route or URL rule looks at.
fn is_normal(target: &[u8]) -> bool {
    let mut i = 0;
    while i < target.len() {
        match target[i] {
            b'%' => return false,
            b'?' => return !target[i..].contains(&b'%'),
            b'/' => {
                // What follows the slash, up to the next segment's end.
                let rest = &target[i + 1..];
                let segment_end = |at: usize| matches!(rest.get(at), None | Some(b'/' | b'?'));
                match rest.first() {
                    Some(b'/') => return false,
                    Some(b'.') if segment_end(1) => return false,
                    Some(b'.') if rest.get(1) == Some(&b'.') && segment_end(2) => return false,
                    _ => {}
                }
            }
            _ => {}
        }
        i += 1;
    }
    true
}

/// Decodes escapes of unreserved characters (ALPHA, DIGIT, `-._~`) and
/// writes the others with upper-case hex; a `%` not followed by two hex
/// digits stays as it is.
fn decode_unreserved(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|c| hex(*c)),
                b.get(i + 2).and_then(|c| hex(*c)),
            )
        {
            let byte = h << 4 | l;
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                out.push(byte as char);
            } else {
                out.push('%');
                out.push(char::from(b"0123456789ABCDEF"[usize::from(h)]));
                out.push(char::from(b"0123456789ABCDEF"[usize::from(l)]));
            }
            i += 3;
            continue;
        }
        // Copy up to the next `%` whole, keeping multi-byte characters intact.
        let next = s[i + 1..].find('%').map_or(b.len(), |n| i + 1 + n);
        out.push_str(&s[i..next]);
        i = next;
    }
    out
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A path (starting with `/`) without empty, `.` and `..` segments; a `..`
/// above the root stays at the root. A trailing `/` (or a last `.` or `..`
/// segment, which names a directory) is kept.
fn clean_path(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let mut kept: Vec<&str> = Vec::with_capacity(segments.len());
    let mut trailing_slash = false;
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "" | "." => trailing_slash = last,
            ".." => {
                kept.pop();
                trailing_slash = last;
            }
            name => {
                kept.push(name);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for name in &kept {
        out.push('/');
        out.push_str(name);
    }
    if trailing_slash || kept.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        normalize_path_and_query(s).into_owned()
    }

    #[test]
    fn normal_targets_are_borrowed() {
        for t in [
            "/",
            "/a/b",
            "/a/b/",
            "/a.b/c..d/.e",
            "/x?q=1&r=/../",
            "/.x/..y",
            "*",
        ] {
            assert!(
                matches!(normalize_path_and_query(t), Cow::Borrowed(_)),
                "{t}"
            );
        }
    }

    /// Every short target over an alphabet of the characters that matter:
    /// one the quick check calls normal is left as it is by the full
    /// normalisation.
    #[test]
    fn the_quick_check_agrees_with_the_normalisation() {
        let alphabet = [b'/', b'.', b'a', b'%', b'2', b'e', b'?'];
        let mut target = vec![b'/'];
        fn walk(target: &mut Vec<u8>, alphabet: &[u8], left: usize) {
            let text = std::str::from_utf8(target).unwrap();
            if is_normal(target) {
                let (path, query) = match text.find('?') {
                    Some(q) => (&text[..q], &text[q..]),
                    None => (text, ""),
                };
                let full = clean_path(&decode_unreserved(path)) + &decode_unreserved(query);
                assert_eq!(full, text, "called normal");
            }
            if left == 0 {
                return;
            }
            for &c in alphabet {
                target.push(c);
                walk(target, alphabet, left - 1);
                target.pop();
            }
        }
        walk(&mut target, &alphabet, 5);
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_upper_cased() {
        assert_eq!(n("/%61dmin/setup%2Eexe"), "/admin/setup.exe");
        assert_eq!(n("/a%2fb%3a"), "/a%2Fb%3A");
        assert_eq!(n("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(n("/100%/x%zz%4"), "/100%/x%zz%4");
        assert_eq!(n("/é%41"), "/éA");
        assert_eq!(n("/x?q=%7e%2f"), "/x?q=~%2F");
    }

    #[test]
    fn dot_segments_and_repeated_slashes_are_removed() {
        assert_eq!(n("//admin/"), "/admin/");
        assert_eq!(n("/a//b///c"), "/a/b/c");
        assert_eq!(n("/public/../admin"), "/admin");
        assert_eq!(n("/public/%2e%2e/admin"), "/admin");
        assert_eq!(n("/a/./b/."), "/a/b/");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/../../etc"), "/etc");
        assert_eq!(n("/.."), "/");
        assert_eq!(n("/a/..?x=/../"), "/?x=/../");
        assert_eq!(n("/a/.?x"), "/a/?x");
        assert_eq!(n("/x?q=%2f"), "/x?q=%2F");
    }
}
