#!/usr/bin/env python3
"""Dockerfile builds side by side: berth (berthd, driven by the docker CLI's legacy builder and
by berth's CLI) and Docker's legacy builder (the peer dockerd at DOCKER_PEER, when it is
there), interleaved rounds, medians. The Dockerfile: FROM busybox, ENV, WORKDIR, COPY of a
10 MiB file, two RUNs writing files, CMD. Timed: a fully cached rebuild and a `--no-cache`
build. Then berth's cost per step beyond the step's own work: a build of 20 ENV steps, and of
10 `RUN true` steps against 10 `berth run --rm busybox true`. Needs root and release binaries
(scripts/build-release.sh).
"""
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time

from common import docker_engines, sh, start_berthd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BERTH_BIN", os.path.join(ROOT, "target", "dist"))
ROUNDS = int(os.environ.get("ROUNDS", "7"))
PEER = os.environ.get("DOCKER_PEER", "unix:///run/peer-docker/docker.sock")
DOCKERFILE = """FROM busybox
ENV GREETING=hello
WORKDIR /app
COPY big /app/big
RUN echo one > /app/one
RUN echo two > /app/two
CMD ["cat", "/app/one"]
"""


def timed(cmd, env, cwd):
    """Seconds `cmd` took in `cwd` (the docker CLI told to use the legacy builder unless `env`
    says otherwise)."""
    t = time.perf_counter()
    r = subprocess.run(cmd, env=dict({"DOCKER_BUILDKIT": "0"}, **env), cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: {r.stderr.strip() or r.stdout.strip()}")
    return time.perf_counter() - t


def row(name, xs):
    return f"| {name} | {statistics.median(xs):.3f} s | {min(xs):.3f} s | {max(xs):.3f} s |"


def main():
    work = os.environ.get("BENCH_DATA", "/var/lib/berth-bench-build")
    run_dir = os.environ.get("BENCH_RUN", "/run/berth-bench-build")
    inputs = tempfile.mkdtemp(prefix="berth-bench-inputs-")
    ctx = tempfile.mkdtemp(prefix="berth-bench-build-")
    daemon, sock = start_berthd(BIN, work, run_dir)
    docker = shutil.which("docker")
    berth = os.path.join(BIN, "berth")
    try:
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write(DOCKERFILE)
        with open(os.path.join(ctx, "big"), "wb") as f:
            f.write(os.urandom(10 << 20))
        engines = docker_engines(docker, sock, PEER, inputs)
        clients = []
        for name, env in engines:
            clients.append((f"{name} (docker CLI, legacy builder)", env, [docker, "build", "-q"]))
            if name == "berth":
                clients.append(("berth (berth CLI)", env, [berth, "build", "-q"]))
            # BuildKit: the docker 20.10 CLI (Debian's docker.io) drives the peer dockerd's
            # BuildKit itself; the docker CLI 28 would need the buildx plugin.
            old_cli = "/usr/bin/docker"
            if name == "Docker" and os.path.exists(old_cli) and "20.10" in sh([old_cli, "--version"]).stdout:
                clients.append(("Docker (docker 20.10 CLI, BuildKit)", dict(env, DOCKER_BUILDKIT="1"), [old_cli, "build", "-q"]))
        # Warm: the cache filled, the page cache too.
        for _, env, cmd in clients:
            timed(cmd + ["-t", "bench-build", "."], env, ctx)
        cached = {c[0]: [] for c in clients}
        fresh = {c[0]: [] for c in clients}
        for i in range(ROUNDS):
            order = clients if i % 2 == 0 else list(reversed(clients))
            for name, env, cmd in order:
                cached[name].append(timed(cmd + ["-t", "bench-build", "."], env, ctx))
            for name, env, cmd in order:
                fresh[name].append(timed(cmd + ["--no-cache", "-t", f"bench-fresh-{i}", "."], env, ctx))
                sh([docker, "rmi", f"bench-fresh-{i}"], env=env)
        print(f"build, {time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}\n")
        print(f"## A 6-instruction Dockerfile with a 10 MiB COPY and two RUNs, {ROUNDS} interleaved rounds\n")
        for title, table in (("fully cached rebuild", cached), ("--no-cache build", fresh)):
            print(f"### {title}\n")
            print("| engine | median | min | max |")
            print("|---|---|---|---|")
            for name, xs in table.items():
                print(row(name, xs))
            for docker_name, what in (("Docker (docker CLI, legacy builder)", "Docker's legacy builder"),
                                      ("Docker (docker 20.10 CLI, BuildKit)", "BuildKit")):
                if docker_name in table:
                    d = statistics.median(table[docker_name])
                    for name, xs in table.items():
                        if name.startswith("berth"):
                            print(f"\n{name} / {what}: {statistics.median(xs) / d:.2f}")
            print()

        # berth's cost per step beyond the step's own work.
        env = engines[0][1]
        steps = tempfile.mkdtemp(prefix="berth-bench-steps-")
        envs = "FROM busybox\n" + "".join(f"ENV V{i}={i}\n" for i in range(20))
        runs = "FROM busybox\n" + "RUN true\n" * 10
        base = "FROM busybox\n"
        per_env, per_run = [], []
        for i in range(ROUNDS):
            for name, text in (("envs", envs), ("runs", runs), ("base", base)):
                with open(os.path.join(steps, name), "w") as f:
                    f.write(text)
            t_base = timed([berth, "build", "-q", "--no-cache", "-f", "base", "."], env, steps)
            t_env = timed([berth, "build", "-q", "--no-cache", "-f", "envs", "."], env, steps)
            t_run = timed([berth, "build", "-q", "--no-cache", "-f", "runs", "."], env, steps)
            t0 = time.perf_counter()
            for _ in range(10):
                timed([berth, "run", "--rm", "busybox", "true"], env, steps)
            t_ctr = (time.perf_counter() - t0) / 10
            per_env.append((t_env - t_base) / 20)
            per_run.append((t_run - t_base) / 10 - t_ctr)
        shutil.rmtree(steps, ignore_errors=True)
        print("### berth's cost per step beyond its own work (--no-cache, berth CLI)\n")
        print(f"- a metadata step (20 ENV): median {statistics.median(per_env) * 1000:.1f} ms")
        print(f"- a RUN step beyond what `berth run --rm busybox true` takes: median {statistics.median(per_run) * 1000:.1f} ms")
    finally:
        daemon.terminate()
        daemon.wait()
        shutil.rmtree(inputs, ignore_errors=True)
        shutil.rmtree(ctx, ignore_errors=True)


if __name__ == "__main__":
    main()
