//! Parses arbitrary list text, then matches hosts and URLs cut from the same input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_policy::blocklist::Blocklist;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (list, problems) = Blocklist::parse(&text);
    assert!(list.len() == list.domain_count() + list.glob_count());
    assert!(problems.iter().all(|p| p.line >= 1));
    let _ = list.memory_bytes();

    // Every line, and every whitespace-separated word, as a host and as a URL.
    for line in text.lines() {
        let _ = list.match_host(line);
        let _ = list.match_request(line, line);
        for word in line.split_whitespace() {
            if let Some(hit) = list.match_host(word) {
                // A host is only blocked by itself or one of its parent domains.
                assert!(word == hit || word.ends_with(&format!(".{hit}")));
            }
            let _ = list.match_request(word, &format!("http://{word}/x"));
            let _ = list.match_request(word, &format!("{word}:443"));
        }
    }
});
