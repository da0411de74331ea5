#!/usr/bin/env python3
"""Memory per idle keep-alive client connection.

Starts Postern (release build) on one worker with a small origin of its own,
opens N client connections, sends one proxied request on each and keeps them all
open and idle, then reads the proxy's RSS. Prints the RSS growth per connection.

    python3 scripts/idle-memory.py [--connections 10000] [--bin target/release/postern]
"""
import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\nContent-Type: text/plain\r\n\r\n" + b"x" * 1024


def origin(listener):
    """Answers every request on every connection with the same 1 KiB response."""
    def serve(conn):
        buf = b""
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                while b"\r\n\r\n" in buf:
                    _, buf = buf.split(b"\r\n\r\n", 1)
                    conn.sendall(RESPONSE)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def read_response(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("proxy closed the connection")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
    while len(body) < length:
        body += sock.recv(65536)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode(errors="replace"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--bin", default="target/release/postern")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.connections + 100:
        sys.exit(f"open-file limit {hard} is too low for {args.connections} connections")

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    threading.Thread(target=origin, args=(listener,), daemon=True).start()
    origin_port = listener.getsockname()[1]

    tmp = tempfile.mkdtemp()
    conf = os.path.join(tmp, "postern.toml")
    with open(conf, "w") as f:
        f.write(
            "workers = 1\n[[listener]]\nname = \"proxy\"\nbind = \"127.0.0.1:0\"\n"
            f"max_connections = {args.connections + 100}\n"
            "[egress]\nallow_private_destinations = true\n[log]\naccess = \"off\"\n"
            "[timeouts]\nclient_idle = \"10m\"\n"
        )
    proc = subprocess.Popen([args.bin, "-c", conf], stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    port = int(line.rsplit(":", 1)[1])
    url = f"http://127.0.0.1:{origin_port}/1k"
    request = f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1:{origin_port}\r\n\r\n".encode()

    def one():
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(request)
        read_response(s)
        return s

    warm = [one() for _ in range(10)]
    time.sleep(0.5)
    before = rss_kib(proc.pid)
    socks = []
    for _ in range(args.connections):
        socks.append(one())
    time.sleep(1.0)
    after = rss_kib(proc.pid)
    per_conn = (after - before) / args.connections
    print(f"connections: {args.connections}")
    print(f"RSS before: {before} KiB, with idle connections: {after} KiB")
    print(f"per idle keep-alive connection: {per_conn:.2f} KiB")
    for s in socks + warm:
        s.close()
    proc.terminate()
    proc.wait(timeout=30)


if __name__ == "__main__":
    main()
