#!/usr/bin/env python3
"""`cp` of a 100 MiB directory of 50 files (2 MiB each, random data) out of a running container,
side by side: berth (berthd, with the docker CLI and with berth's CLI) and Docker (the peer
dockerd at DOCKER_PEER, when it is there), interleaved rounds, medians. The copy's output is
removed after each round (not timed). Then a volume's first population from an image holding
the same 100 MiB at the volume's path, against `cp -a` of that content on the host. Needs root
and release binaries (scripts/build-release.sh).
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
ROUNDS = int(os.environ.get("ROUNDS", "9"))
PEER = os.environ.get("DOCKER_PEER", "unix:///run/peer-docker/docker.sock")
WRITE = "mkdir /data; for i in $(seq 1 50); do head -c 2097152 /dev/urandom > /data/f$i; done; sleep 3600"


def timed(cmd, env):
    t = time.perf_counter()
    sh(cmd, env=env)
    return time.perf_counter() - t


def main():
    work = os.environ.get("BENCH_DATA", "/var/lib/berth-bench-cp")
    run_dir = os.environ.get("BENCH_RUN", "/run/berth-bench-cp")
    inputs = tempfile.mkdtemp(prefix="berth-bench-inputs-")
    daemon, sock = start_berthd(BIN, work, run_dir)
    docker = shutil.which("docker")
    berth = os.path.join(BIN, "berth")
    engines = []
    try:
        engines = docker_engines(docker, sock, PEER, inputs)
        for _, env in engines:
            sh([docker, "rm", "-f", "bench-cp"], env=env, check=False)
            sh([docker, "run", "-d", "--name", "bench-cp", "--network", "none", "busybox", "sh", "-c", WRITE], env=env)
            while sh([docker, "exec", "bench-cp", "test", "-e", "/data/f50"], env=env, check=False).returncode != 0:
                time.sleep(0.2)
            time.sleep(1)  # the last file finishes
        os.sync()
        clients = [(f"{name} (docker CLI)", [docker], env) for name, env in engines]
        clients.insert(1, ("berth (berth CLI)", [berth], engines[0][1]))
        times = {name: [] for name, _, _ in clients}
        out = os.path.join(inputs, "out")
        for i in range(ROUNDS):
            order = clients if i % 2 == 0 else list(reversed(clients))
            for name, cli, env in order:
                times[name].append(timed(cli + ["cp", "bench-cp:/data", out], env))
                shutil.rmtree(out)
        print(f"cp, {time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}\n")
        print(f"## cp of a 100 MiB directory of 50 files out of a running container, {ROUNDS} interleaved rounds\n")
        print("| engine | median | min | max |")
        print("|---|---|---|---|")
        for name, xs in times.items():
            print(f"| {name} | {statistics.median(xs):.3f} s | {min(xs):.3f} s | {max(xs):.3f} s |")
        if "Docker (docker CLI)" in times:
            d = statistics.median(times["Docker (docker CLI)"])
            print(f"\nberth / Docker: {statistics.median(times['berth (docker CLI)']) / d:.2f} (docker CLI), "
                  f"{statistics.median(times['berth (berth CLI)']) / d:.2f} (berth CLI)")

        # A volume's first population: run with a new volume at /data minus run without one,
        # against a plain copy of the same tree on the host.
        env = engines[0][1]
        sh([docker, "commit", "bench-cp", "bench-cp-image"], env=env)
        src = os.path.join(inputs, "tree")
        sh([docker, "cp", "bench-cp:/data", src], env=env)
        fill, plain, copy = [], [], []
        for i in range(ROUNDS):
            os.sync()
            plain.append(timed([docker, "run", "--rm", "--network", "none", "bench-cp-image", "true"], env))
            fill.append(timed([docker, "run", "--rm", "--network", "none", "-v", f"bench-fill-{i}:/data", "bench-cp-image", "true"], env))
            sh([docker, "volume", "rm", f"bench-fill-{i}"], env=env)
            dst = os.path.join(inputs, "copy")
            copy.append(timed(["cp", "-a", src, dst], None))
            shutil.rmtree(dst)
        population = statistics.median(fill) - statistics.median(plain)
        print(f"\n## a volume's first population from the image (100 MiB, 50 files), {ROUNDS} rounds\n")
        print("| what | median |")
        print("|---|---|")
        print(f"| `run` with a new volume at /data, minus `run` without | {population:.3f} s |")
        print(f"| `cp -a` of the same tree on the host | {statistics.median(copy):.3f} s |")
        print(f"\npopulation / cp -a: {population / statistics.median(copy):.2f}")
        sh([docker, "rmi", "-f", "bench-cp-image"], env=env, check=False)
    finally:
        for _, env in engines:
            sh([docker, "rm", "-f", "bench-cp"], env=env, check=False)
        daemon.terminate()
        daemon.wait()
        shutil.rmtree(inputs, ignore_errors=True)


if __name__ == "__main__":
    main()
