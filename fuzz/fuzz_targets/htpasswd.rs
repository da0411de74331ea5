//! Parses arbitrary user and group files, then verifies passwords cut from the input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_policy::htpasswd::{Groups, Htpasswd};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    if let Ok(groups) = Groups::parse(&text) {
        for word in text.split_whitespace() {
            let _ = groups.of(word);
        }
    }

    // bcrypt is slow by design (up to cost 31); leave it to the unit tests so each run
    // stays in microseconds.
    if text.contains("$2") {
        let _ = Htpasswd::parse(&text);
        return;
    }
    let Ok(users) = Htpasswd::parse(&text) else {
        return;
    };
    // apr1 costs 1000 MD5 rounds, so cap the number of checks of known users.
    let words: Vec<&str> = text.split([':', '\n']).take(64).collect();
    let mut checks = 0;
    for user in &words {
        if !users.contains(user) {
            assert!(!users.verify(user, user));
            continue;
        }
        for password in &words {
            if checks == 64 {
                return;
            }
            checks += 1;
            let _ = users.verify(user, password);
        }
    }
});
