#!/usr/bin/env python3
"""How soon `/events` delivers an event: a client follows berthd's `/events` (raw HTTP on its
socket) while containers are created, started and removed; for each event, the time it
arrives minus its own `timeNano` (stamped when berthd made the change; one clock). Side by
side with the peer dockerd (DOCKER_PEER) when it is there. Needs root and release binaries
(scripts/build-release.sh).
"""
import json
import os
import platform
import shutil
import socket
import statistics
import tempfile
import threading
import time

from common import docker_engines, sh, start_berthd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BERTH_BIN", os.path.join(ROOT, "target", "dist"))
ROUNDS = int(os.environ.get("ROUNDS", "30"))
PEER = os.environ.get("DOCKER_PEER", "unix:///run/peer-docker/docker.sock")


def follow(sock_path, latencies, stop):
    """Read /events, noting each event's delay; until `stop` is set."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    s.settimeout(0.2)
    buf = b""
    while not stop.is_set():
        try:
            data = s.recv(65536)
        except socket.timeout:
            continue
        if not data:
            break
        now = time.time_ns()
        buf += data
        # Chunked framing around JSON lines: the JSON objects are what matter.
        for line in buf.split(b"\n")[:-1]:
            line = line.strip()
            if line.startswith(b"{"):
                try:
                    ev = json.loads(line)
                    latencies.append((now - ev["timeNano"]) / 1e6)
                except (ValueError, KeyError):
                    pass
        buf = buf.split(b"\n")[-1]
    s.close()


def main():
    work = os.environ.get("BENCH_DATA", "/var/lib/berth-bench-events")
    run_dir = os.environ.get("BENCH_RUN", "/run/berth-bench-events")
    inputs = tempfile.mkdtemp(prefix="berth-bench-inputs-")
    daemon, sock = start_berthd(BIN, work, run_dir)
    docker = shutil.which("docker")
    try:
        engines = docker_engines(docker, sock, PEER, inputs)
        results = {}
        for name, env in engines:
            latencies, stop = [], threading.Event()
            t = threading.Thread(target=follow, args=(env["DOCKER_HOST"][len("unix://"):], latencies, stop))
            t.start()
            time.sleep(0.3)
            for i in range(ROUNDS):
                c = f"bench-ev-{i}"
                sh([docker, "create", "--name", c, "--network", "none", "busybox", "true"], env=env)
                sh([docker, "rm", c], env=env)
            time.sleep(0.5)
            stop.set()
            t.join()
            results[name] = latencies
        print(f"events, {time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}\n")
        print(f"## delay from a change to its event at a /events client ({ROUNDS} create + rm, 2 events each)\n")
        print("| engine | events | median | p99 | max |")
        print("|---|---|---|---|---|")
        for name, xs in results.items():
            xs = sorted(xs)
            p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))] if xs else float("nan")
            print(f"| {name} | {len(xs)} | {statistics.median(xs):.3f} ms | {p99:.3f} ms | {max(xs):.3f} ms |")
    finally:
        daemon.terminate()
        daemon.wait()
        shutil.rmtree(inputs, ignore_errors=True)


if __name__ == "__main__":
    main()
