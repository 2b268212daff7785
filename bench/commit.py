#!/usr/bin/env python3
"""`commit` of a container that wrote 150 MiB (a 50 MiB file and 50 files of 2 MiB, random data),
side by side: berth (berthd, driven by the docker CLI) and Docker (the peer dockerd at
DOCKER_PEER, when it is there), interleaved rounds, medians. Each round makes a fresh container
in each engine (not timed), then times `docker commit` of it, then removes the image and the
container. Needs root and release binaries (scripts/build-release.sh).
"""
import os
import platform
import shutil
import statistics
import tempfile
import time

from common import docker_engines, sh, start_berthd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BERTH_BIN", os.path.join(ROOT, "target", "dist"))
ROUNDS = int(os.environ.get("ROUNDS", "7"))
PEER = os.environ.get("DOCKER_PEER", "unix:///run/peer-docker/docker.sock")
WRITE = ("head -c 52428800 /dev/urandom > /big; mkdir /files; "
         "for i in $(seq 1 50); do head -c 2097152 /dev/urandom > /files/f$i; done")


def main():
    work = os.environ.get("BENCH_DATA", "/var/lib/berth-bench-commit")
    run_dir = os.environ.get("BENCH_RUN", "/run/berth-bench-commit")
    inputs = tempfile.mkdtemp(prefix="berth-bench-inputs-")
    daemon, sock = start_berthd(BIN, work, run_dir)
    docker = shutil.which("docker")
    try:
        engines = docker_engines(docker, sock, PEER, inputs)
        times = {name: [] for name, _ in engines}
        for i in range(ROUNDS):
            order = engines if i % 2 == 0 else list(reversed(engines))
            for name, env in order:
                c = f"bench-commit-{i}"
                sh([docker, "run", "--name", c, "--network", "none", "busybox", "sh", "-c", WRITE], env=env)
                os.sync()
                t = time.perf_counter()
                sh([docker, "commit", c, f"bench-committed:{i}"], env=env)
                times[name].append(time.perf_counter() - t)
                sh([docker, "rm", "-f", c], env=env)
                sh([docker, "rmi", f"bench-committed:{i}"], env=env)
        print(f"commit, {time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}\n")
        print(f"## commit of a container that wrote 150 MiB (50 MiB + 50 × 2 MiB), {ROUNDS} interleaved rounds\n")
        print("| engine | median | min | max |")
        print("|---|---|---|---|")
        for name, xs in times.items():
            print(f"| {name} (docker CLI) | {statistics.median(xs):.3f} s | {min(xs):.3f} s | {max(xs):.3f} s |")
        if len(times) == 2:
            print(f"\nberth / Docker: {statistics.median(times['berth']) / statistics.median(times['Docker']):.2f}")
    finally:
        daemon.terminate()
        daemon.wait()
        shutil.rmtree(inputs, ignore_errors=True)


if __name__ == "__main__":
    main()
