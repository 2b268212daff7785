#!/usr/bin/env python3
"""Networking, side by side: berth (berthd, driven by the docker CLI and by its own) and Docker
(the peer dockerd at DOCKER_PEER, when it is there), in interleaved rounds, medians:
- `run --rm busybox true` on the default bridge and with `--network none`, and what the bridge
  costs on top (bridge − none) for each engine;
- throughput through a port published on 127.0.0.1: SIZE_MIB sent from the host into busybox
  `nc -l` in a container (timed from the connect until nc has read everything and closed),
  Docker with its default userland proxy.
All traffic stays on the machine. Needs root and release binaries (scripts/build-release.sh).
"""
import os
import platform
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

from common import busybox_rootfs, env_for, free_port, start_berthd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BERTH_BIN", os.path.join(ROOT, "target", "dist"))
ROUNDS = int(os.environ.get("ROUNDS", "20"))
XFER_ROUNDS = int(os.environ.get("XFER_ROUNDS", "5"))
SIZE_MIB = int(os.environ.get("SIZE_MIB", "1024"))
PEER = os.environ.get("DOCKER_PEER", "unix:///run/peer-docker/docker.sock")


def sh(cmd, env=None, check=True):
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def timed(cmd, env=None):
    t = time.perf_counter()
    sh(cmd, env=env)
    return time.perf_counter() - t


def transfer(docker, env):
    """Seconds to push SIZE_MIB through a port published on 127.0.0.1 into `nc -l`."""
    port = free_port()
    cid = sh([docker, "run", "-d", "-p", f"127.0.0.1:{port}:5000", "busybox", "sh", "-c", "sleep 3600 | nc -l -p 5000 > /dev/null"],
             env=env).stdout.strip()
    chunk = b"\0" * (1 << 20)
    try:
        deadline = time.time() + 10
        while True:
            # A connection accepted by a proxy (Docker's) or refused until nc listens: probe with
            # a byte and see that the other side keeps the connection.
            s = socket.socket()
            try:
                s.connect(("127.0.0.1", port))
                s.sendall(b"\0")
                s.settimeout(0.2)
                if s.recv(1) == b"":
                    raise ConnectionResetError
            except socket.timeout:
                break
            except OSError:
                s.close()
                if time.time() > deadline:
                    raise SystemExit("nothing listens behind the published port")
                time.sleep(0.05)
        s.settimeout(None)
        t = time.perf_counter()
        for _ in range(SIZE_MIB):
            s.sendall(chunk)
        s.shutdown(socket.SHUT_WR)
        s.recv(1)  # nc read everything and closed
        took = time.perf_counter() - t
        s.close()
        return took
    finally:
        sh([docker, "rm", "-f", cid], env=env, check=False)


def med(xs):
    return statistics.median(xs)


def main():
    work = os.environ.get("BENCH_DATA", "/var/lib/berth-bench-net")
    run_dir = os.environ.get("BENCH_RUN", "/run/berth-bench-net")
    inputs = tempfile.mkdtemp(prefix="berth-bench-inputs-")
    daemon, sock = start_berthd(BIN, work, run_dir)
    benv = env_for(sock)
    berth = os.path.join(BIN, "berth")
    docker = shutil.which("docker")
    try:
        fs = os.path.join(inputs, "rootfs")
        busybox_rootfs(fs)
        tar = os.path.join(inputs, "busybox.tar")
        sh(["tar", "-C", fs, "-cf", tar, "."])
        if sh([berth, "image", "inspect", "busybox"], env=benv, check=False).returncode != 0:
            sh([berth, "import", tar, "busybox:latest"], env=benv)
        peer = docker and PEER.startswith("unix://") and os.path.exists(PEER[len("unix://"):])
        penv = env_for(PEER) if peer else None
        if peer and sh([docker, "image", "inspect", "busybox"], env=penv, check=False).returncode != 0:
            sh([docker, "import", tar, "busybox:latest"], env=penv)

        engines = [("berth (berth CLI)", berth, benv)]
        if docker:
            engines.append(("berth (docker CLI)", docker, benv))
        if peer:
            engines.append(("Docker (docker CLI)", docker, penv))
        modes = {"bridge": [], "none": ["--network", "none"]}
        times = {(e, m): [] for e, _, _ in engines for m in modes}
        for name, cli, env in engines:  # warm-up
            for m, flags in modes.items():
                sh([cli, "run", "--rm"] + flags + ["busybox", "true"], env=env)
        for _ in range(ROUNDS):
            for name, cli, env in engines:
                for m, flags in modes.items():
                    times[(name, m)].append(timed([cli, "run", "--rm"] + flags + ["busybox", "true"], env=env))
        print(f"network, {time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}\n")
        print(f"## run --rm busybox true, {ROUNDS} interleaved rounds (medians)\n")
        print("| engine | --network none | default bridge | bridge − none |")
        print("|---|---|---|---|")
        for name, _, _ in engines:
            n, b = med(times[(name, "none")]), med(times[(name, "bridge")])
            print(f"| {name} | {n * 1000:.1f} ms | {b * 1000:.1f} ms | {(b - n) * 1000:+.1f} ms |")

        xfer = {name: [] for name, _, _ in engines if name != "berth (berth CLI)"} or {engines[0][0]: []}
        for _ in range(XFER_ROUNDS):
            for name, cli, env in engines:
                if name in xfer:
                    xfer[name].append(transfer(cli, env))
        print(f"\n## {SIZE_MIB} MiB through a port published on 127.0.0.1 into busybox nc, {XFER_ROUNDS} rounds (medians)\n")
        print("| engine | time | throughput |")
        print("|---|---|---|")
        for name, xs in xfer.items():
            print(f"| {name} | {med(xs):.2f} s | {SIZE_MIB / med(xs):.0f} MiB/s |")
        if "Docker (docker CLI)" in xfer and "berth (docker CLI)" in xfer:
            print(f"\nberth / Docker throughput: {med(xfer['Docker (docker CLI)']) / med(xfer['berth (docker CLI)']):.2f}")
    finally:
        daemon.terminate()
        daemon.wait()
        shutil.rmtree(inputs, ignore_errors=True)


if __name__ == "__main__":
    main()
