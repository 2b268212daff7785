#!/usr/bin/env python3
"""Healthchecks and stats at scale, side by side with the peer dockerd (DOCKER_PEER) when it is
there, engines interleaved round by round:

- idle CPU: N containers (`sleep`, no network) each with a healthcheck every second, all
  healthy; the CPU time the engine's daemon used over a window (berthd; dockerd + containerd),
  and that of the containers' shims (berth-shim; containerd-shim-runc-v2), in % of one core;
- `docker stats --no-stream` (the docker CLI, every running container): its wall time.

Needs root and release binaries (scripts/build-release.sh). N, WINDOW (s), ROUNDS, STATS_RUNS.
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
N = int(os.environ.get("N", "100"))
WINDOW = float(os.environ.get("WINDOW", "30"))
ROUNDS = int(os.environ.get("ROUNDS", "2"))
STATS_RUNS = int(os.environ.get("STATS_RUNS", "5"))
PEER = os.environ.get("DOCKER_PEER", "unix:///run/peer-docker/docker.sock")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of a process so far; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def processes(match):
    """Pids whose command line satisfies `match`."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if match(cmd):
            out.append(int(p))
    return out


def groups(name, daemon_pid):
    """The engine's daemon processes and its shims, as two pid lists (looked up again each time:
    shims come and go)."""
    if name == "berth":
        return [daemon_pid], processes(lambda c: "berth-shim" in c and "/run/berth-bh" in c)
    daemons = processes(lambda c: "/run/peer-docker" in c and (c.startswith("dockerd") or c.startswith("containerd ") or "/dockerd " in c or "/containerd " in c))
    return daemons, processes(lambda c: "containerd-shim" in c and "peer-docker" in c)


def window_cpu(name, daemon_pid):
    """% of one core used by the daemon(s) and by the shims over WINDOW seconds."""
    d0, s0 = groups(name, daemon_pid)
    a = (sum(map(cpu_seconds, d0)), {p: cpu_seconds(p) for p in s0})
    time.sleep(WINDOW)
    d1, s1 = groups(name, daemon_pid)
    daemon = sum(map(cpu_seconds, d1)) - a[0]
    shims = sum(cpu_seconds(p) - a[1].get(p, 0.0) for p in s1 if p in a[1])
    return 100 * daemon / WINDOW, 100 * shims / WINDOW


def run_all(docker, env, prefix):
    for i in range(N):
        sh([docker, "run", "-d", "--name", f"{prefix}{i}", "--network", "none", "--health-cmd", "true",
            "--health-interval", "1s", "busybox", "sleep", "3600"], env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        healthy = sh([docker, "ps", "-q", "--filter", "health=healthy"], env=env).stdout.split()
        if len(healthy) >= N:
            return
        time.sleep(1)
    raise SystemExit(f"not all {N} containers became healthy")


def remove_all(docker, env, prefix):
    names = [f"{prefix}{i}" for i in range(N)]
    for i in range(0, N, 25):
        sh([docker, "rm", "-f", *names[i:i + 25]], env=env, check=False)


def stats_time(docker, env):
    t = time.perf_counter()
    out = sh([docker, "stats", "--no-stream", "--format", "{{.Name}} {{.CPUPerc}}"], env=env).stdout
    took = time.perf_counter() - t
    if len(out.splitlines()) < N:
        raise SystemExit(f"stats listed {len(out.splitlines())} of {N}")
    return took


def main():
    docker = shutil.which("docker") or "/usr/local/bin/docker"
    work = tempfile.mkdtemp(prefix="berth-bench-health-")
    # A short exec root, as the default /run/berth is (a shim's socket path then fits in a
    # socket address and is connected to directly).
    daemon, sock = start_berthd(BIN, work, "/run/berth-bh")
    results = {}
    try:
        engines = docker_engines(docker, sock, PEER, os.path.join(work, "in"))
        for r in range(ROUNDS):
            for name, env in engines:
                prefix = f"hc{r}-"
                run_all(docker, env, prefix)
                time.sleep(3)
                d, s = window_cpu(name, daemon.pid)
                times = [stats_time(docker, env) for _ in range(STATS_RUNS)]
                remove_all(docker, env, prefix)
                res = results.setdefault(name, {"daemon": [], "shims": [], "stats": []})
                res["daemon"].append(d)
                res["shims"].append(s)
                res["stats"].extend(times)
                print(f"round {r + 1} {name}: daemon {d:.2f} %, shims {s:.2f} %, stats {statistics.median(times) * 1000:.0f} ms", flush=True)
    finally:
        daemon.terminate()
        daemon.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()}; "
          f"{N} containers, healthcheck every 1 s, {WINDOW:.0f} s windows, {ROUNDS} rounds")
    print("| engine | daemon CPU (% of a core, median) | shims CPU | `stats --no-stream` (median) |")
    print("|---|---|---|---|")
    for name, res in results.items():
        print(f"| {name} | {statistics.median(res['daemon']):.2f} | {statistics.median(res['shims']):.2f} | "
              f"{statistics.median(res['stats']) * 1000:.0f} ms |")
    if "Docker" in results and "berth" in results:
        b, d = results["berth"], results["Docker"]
        print(f"\nratios berth/Docker: daemon CPU {statistics.median(b['daemon']) / max(statistics.median(d['daemon']), 1e-9):.2f}, "
              f"stats {statistics.median(b['stats']) / statistics.median(d['stats']):.3f}")


if __name__ == "__main__":
    main()
