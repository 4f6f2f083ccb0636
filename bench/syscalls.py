#!/usr/bin/env python3
"""Syscalls per message of a server, counted by strace: a fixed workload
(4 connections ping-ponging 64-byte messages, every reply checked), so the
effect of a change on the number of read/write/epoll calls can be seen
without the machine's timing noise.

    bench/syscalls.py target/release/upcased [messages]

Prints recvfrom/sendto/epoll_wait (and read/write, if used) per message.
"""
import re
import socket
import subprocess
import sys
import tempfile
import time


def main():
    server = sys.argv[1]
    messages = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    out = tempfile.NamedTemporaryFile(prefix="upcase-strace-", delete=False).name
    proc = subprocess.Popen(
        ["strace", "-c", "-f", "-o", out, server, "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"],
        stderr=subprocess.PIPE, text=True)
    port = None
    while port is None:
        line = proc.stderr.readline()
        if not line:
            sys.exit("the server exited before listening")
        m = re.search(r"listening on tcp://127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1))
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    msg = b"x" * 63 + b"\n"
    for _ in range(messages // len(conns)):
        for c in conns:
            c.sendall(msg)
        for c in conns:
            got = b""
            while len(got) < len(msg):
                got += c.recv(len(msg) - len(got))
            assert got == msg.upper(), got
    for c in conns:
        c.close()
    time.sleep(0.2)
    # SIGTERM the server itself (strace's child), so strace writes its table.
    subprocess.run(["pkill", "-TERM", "-f", f"^{re.escape(server)} --tcp 127.0.0.1:0"])
    proc.wait()
    calls = {}
    for line in open(out):
        fields = line.split()
        if fields and fields[-1] in ("read", "write", "recvfrom", "sendto", "epoll_wait"):
            calls[fields[-1]] = int(fields[3])
    per = {name: round(count / messages, 2) for name, count in sorted(calls.items())}
    print(f"{server}: {per} per message ({messages} messages)")


if __name__ == "__main__":
    main()
