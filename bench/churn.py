#!/usr/bin/env python3
"""berthd's memory after bursts: ROUNDS rounds (default 5) of BURST containers (default 200)
created and started at once by 8 clients (`run -d`), then removed at once (`rm -f`), and a flood
of FLOOD idle connections (default 3000) held and then closed. berthd's RSS is read after each
phase once it has settled (no shim left to reap, 2 s idle), with its open descriptors. What is
wanted: after each round and after the flood, RSS back near where it was, not climbing.
Needs root and release binaries (scripts/build-release.sh). Prints a Markdown table.
"""
import concurrent.futures
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from common import busybox_rootfs, fds, status_kib, threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BERTH_BIN", os.path.join(ROOT, "target", "dist"))
ROUNDS = int(os.environ.get("ROUNDS", "5"))
BURST = int(os.environ.get("BURST", "200"))
FLOOD = int(os.environ.get("FLOOD", "3000"))


def main():
    work = tempfile.mkdtemp(prefix="berth-churn-")
    sock_path = f"{work}/berth.sock"
    env = dict(os.environ, DOCKER_HOST=f"unix://{sock_path}")
    berth = os.path.join(BIN, "berth")
    daemon = subprocess.Popen(
        [os.path.join(BIN, "berthd"), "--data-root", f"{work}/data", "--exec-root", f"{work}/exec", "-H",
         f"unix://{sock_path}", "--config-file", f"{work}/none.json"],
        stderr=open(f"{work}/berthd.log", "w"))

    def b(*args):
        return subprocess.run([berth, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def settled(label):
        # Shims of removed containers exit and are reaped; then two quiet seconds.
        deadline = time.time() + 60
        while time.time() < deadline and b("ps", "-aq").stdout.strip():
            time.sleep(0.2)
        time.sleep(float(os.environ.get("SETTLE", "2")))
        rows.append((label, status_kib(daemon.pid, "VmRSS"), status_kib(daemon.pid, "RssAnon"), fds(daemon.pid),
                     threads(daemon.pid)))

    rows = []
    try:
        for _ in range(100):
            if os.path.exists(sock_path):
                break
            time.sleep(0.05)
        fs = os.path.join(work, "rootfs")
        busybox_rootfs(fs)
        tar = os.path.join(work, "busybox.tar")
        subprocess.run(["tar", "-C", fs, "-cf", tar, "."], check=True)
        b("import", tar, "busybox:latest")
        b("run", "--rm", "busybox", "true")
        settled("idle")
        failures = 0
        for r in range(ROUNDS):
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                runs = list(pool.map(lambda i: b("run", "-d", "--network", "none", "busybox", "sleep", "600"), range(BURST)))
            failures += sum(1 for x in runs if x.returncode != 0)
            ids = b("ps", "-aq").stdout.decode().split()
            rows.append((f"round {r + 1}: {len(ids)} running", status_kib(daemon.pid, "VmRSS"), status_kib(daemon.pid, "RssAnon"),
                         fds(daemon.pid), threads(daemon.pid)))
            b("rm", "-f", *ids)
            settled(f"round {r + 1}: removed")
        held = []
        for _ in range(FLOOD):
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock_path)
            held.append(s)
        time.sleep(1)
        rows.append((f"{FLOOD} idle connections", status_kib(daemon.pid, "VmRSS"), status_kib(daemon.pid, "RssAnon"),
                     fds(daemon.pid), threads(daemon.pid)))
        for s in held:
            s.close()
        settled("connections closed")
        print(f"| phase | RSS KiB | anon KiB | fds | threads |\n|---|---|---|---|---|")
        for label, rss, anon, n, t in rows:
            print(f"| {label} | {rss} | {anon} | {n} | {t} |")
        if failures:
            print(f"{failures} runs failed", file=sys.stderr)
    finally:
        ids = b("ps", "-aq").stdout.decode().split()
        if ids:
            b("rm", "-f", *ids)
        daemon.terminate()
        daemon.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
