#!/usr/bin/env python3
"""Writes a synthetic blocklist of N distinct domains (default 1,000,000) in
the mixed formats Postern reads, for benchmarks: plain domains, hosts-file
lines and Adblock rules. Deterministic, so runs are comparable.

    python3 scripts/gen-blocklist.py bench/blocklist-1m.txt [N]
"""
import sys

WORDS = ["ads", "track", "pixel", "metric", "beacon", "promo", "click", "stat", "banner", "spy"]
TLDS = ["com", "net", "org", "io", "info", "biz", "xyz", "top"]


def main() -> None:
    path = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    with open(path, "w") as out:
        out.write("# synthetic list for benchmarks\n")
        for i in range(n):
            word = WORDS[i % len(WORDS)]
            tld = TLDS[(i // len(WORDS)) % len(TLDS)]
            name = f"{word}{i}.{tld}" if i % 3 else f"cdn.{word}{i}.{tld}"
            if i % 5 == 0:
                out.write(f"0.0.0.0 {name}\n")
            elif i % 7 == 0:
                out.write(f"||{name}^\n")
            else:
                out.write(f"{name}\n")


if __name__ == "__main__":
    main()
