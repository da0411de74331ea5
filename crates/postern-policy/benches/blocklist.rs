//! Blocklist parsing and lookup at the scale of the largest public lists (1M domains).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use postern_policy::blocklist::Blocklist;

const DOMAINS: usize = 1_000_000;
const WORDS: &[&str] = &[
    "ads",
    "tracker",
    "metrics",
    "pixel",
    "banner",
    "click",
    "stats",
    "promo",
    "analytics",
    "beacon",
    "adserver",
    "telemetry",
    "popup",
    "cdn",
    "affiliate",
    "survey",
];
const TLDS: &[&str] = &["com", "net", "org", "io", "co.uk", "info", "xyz", "de"];

/// The `i`th listed domain: a mix of two, three and four labels.
fn domain(i: usize) -> String {
    let word = WORDS[i % WORDS.len()];
    let tld = TLDS[(i / WORDS.len()) % TLDS.len()];
    if i.is_multiple_of(5) {
        format!("srv.{word}{i}.{tld}")
    } else {
        format!("{word}{i}.{tld}")
    }
}

/// 1M distinct domains as a plain list, with a comment every thousand lines.
fn list_text() -> String {
    let mut text = String::with_capacity(DOMAINS * 24);
    for i in 0..DOMAINS {
        if i.is_multiple_of(1000) {
            text.push_str("# section\n");
        }
        text.push_str(&domain(i));
        text.push('\n');
    }
    text
}

fn bench(c: &mut Criterion) {
    let text = list_text();
    let (list, problems) = Blocklist::parse(&text);
    assert!(problems.is_empty());
    assert_eq!(list.domain_count(), DOMAINS);
    eprintln!(
        "blocklist: {} domains, {} bytes of text, memory_bytes = {} ({:.1} MiB, {:.1} bytes/domain)",
        list.domain_count(),
        text.len(),
        list.memory_bytes(),
        list.memory_bytes() as f64 / (1024.0 * 1024.0),
        list.memory_bytes() as f64 / DOMAINS as f64,
    );

    let mut group = c.benchmark_group("blocklist");
    group.sample_size(10);
    group.bench_function("parse_1m", |b| {
        b.iter(|| Blocklist::parse(black_box(&text)))
    });
    group.finish();

    let listed = domain(123_457);
    let hit = format!("a.b.{listed}");
    assert_eq!(list.match_host(&hit), Some(listed.as_str()));
    let hit = hit.as_str();
    c.bench_function("blocklist/match_host_hit", |b| {
        b.iter(|| list.match_host(black_box(hit)))
    });

    let miss = "www.images.example-unlisted.org";
    assert_eq!(list.match_host(miss), None);
    c.bench_function("blocklist/match_host_miss_4_labels", |b| {
        b.iter(|| list.match_host(black_box(miss)))
    });

    c.bench_function("blocklist/match_request_miss", |b| {
        b.iter(|| {
            list.match_request(
                black_box(miss),
                black_box("http://www.images.example-unlisted.org/a/b?c"),
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
