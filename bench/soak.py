#!/usr/bin/env python3
"""berthd's memory over hours of use: a private berthd runs a mix of what users do, round after
round (SOAK_PAUSE seconds apart, default 0.5), for SOAK_SECONDS (default 3600), and its RSS is
sampled every SAMPLE_SECONDS. Each round:
`run --rm` (with output), a detached container that logs, `logs`, `logs --tail`, `exec` (plain
and TTY), `inspect`, `ps -a`, `top`, `stop`, `rm`, `images`, `tag`/`rmi`, and a burst of 10
`run -d` removed together. Reports RSS at the start, after the warm-up round, at the end, its
maximum, and the slope of a least-squares line over the samples after warm-up (KiB/hour).
Needs root and release binaries (scripts/build-release.sh). Prints a Markdown summary.
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import busybox_rootfs, fds, rss_kib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "dist")
SOAK = float(os.environ.get("SOAK_SECONDS", "3600"))
SAMPLE = float(os.environ.get("SAMPLE_SECONDS", "30"))
PAUSE = float(os.environ.get("SOAK_PAUSE", "0.5"))  # between rounds: steady use, not a stress test


def main():
    work = tempfile.mkdtemp(prefix="berth-soak-")
    sock = f"unix://{work}/berth.sock"
    env = dict(os.environ, DOCKER_HOST=sock)
    berth = os.path.join(BIN, "berth")
    daemon = subprocess.Popen(
        [os.path.join(BIN, "berthd"), "--data-root", f"{work}/data", "--exec-root", f"{work}/exec", "-H", sock,
         "--config-file", f"{work}/none.json"],
        stderr=open(f"{work}/berthd.log", "w"))
    failures = 0

    def b(*args, check=True):
        nonlocal failures
        r = subprocess.run([berth, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if check and r.returncode != 0:
            failures += 1
            print(f"failed: berth {' '.join(args)}: {r.stderr.decode().strip()}", file=sys.stderr)
        return r

    try:
        for _ in range(100):
            if os.path.exists(f"{work}/berth.sock"):
                break
            time.sleep(0.05)
        rss_start = rss_kib(daemon.pid)
        fs = os.path.join(work, "rootfs")
        busybox_rootfs(fs)
        tar = os.path.join(work, "busybox.tar")
        subprocess.run(["tar", "-C", fs, "-cf", tar, "."], check=True)
        b("import", tar, "busybox:latest")

        def round_(i):
            b("run", "--rm", "--network", "none", "busybox", "sh", "-c", "echo hello; seq 1 200")
            name = f"soak{i}"
            b("run", "-d", "--name", name, "--network", "none", "busybox", "sh", "-c", "while true; do echo tick; sleep 0.2; done")
            b("exec", name, "true")
            b("exec", "-t", name, "ls", "/")
            b("logs", name)
            b("logs", "--tail", "3", name)
            b("inspect", name)
            b("ps", "-a")
            b("top", name)
            b("stop", "-t", "0", name)
            b("rm", name)
            b("images")
            b("tag", "busybox", f"soak/tag:{i}")
            b("rmi", f"soak/tag:{i}")
            ids = [b("run", "-d", "--network", "none", "busybox", "sleep", "60").stdout.decode().strip() for _ in range(10)]
            b("rm", "-f", *ids)

        round_(0)
        time.sleep(1)
        rss_warm = rss_kib(daemon.pid)
        fds_warm = fds(daemon.pid)
        start = time.time()
        samples = []  # (hours since start, KiB)
        rounds = 1
        next_sample = start
        while time.time() - start < SOAK:
            round_(rounds)
            rounds += 1
            time.sleep(PAUSE)
            if time.time() >= next_sample:
                samples.append(((time.time() - start) / 3600, rss_kib(daemon.pid)))
                next_sample += SAMPLE
        time.sleep(2)
        rss_end = rss_kib(daemon.pid)
        fds_end = fds(daemon.pid)
        samples.append(((time.time() - start) / 3600, rss_end))
        xs, ys = [s[0] for s in samples], [s[1] for s in samples]
        mx, my = statistics.mean(xs), statistics.mean(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx > 0 else 0.0
        hours = (time.time() - start) / 3600
        # Each round: 1 run --rm, 1 run -d (+ its exec, logs, stop, rm), 10 run -d removed together.
        print(f"## berthd soak: {hours:.2f} h, {rounds} rounds ({rounds * 12} containers, {rounds * 2} execs), {failures} failed commands\n")
        print("| berthd RSS | MiB |")
        print("|---|---|")
        print(f"| at start | {rss_start / 1024:.1f} |")
        print(f"| after the first round | {rss_warm / 1024:.1f} |")
        print(f"| at the end | {rss_end / 1024:.1f} |")
        print(f"| maximum sampled | {max(ys) / 1024:.1f} |")
        print(f"\nslope over {len(samples)} samples: {slope:+.0f} KiB/hour; open fds {fds_warm} -> {fds_end}")
        step = max(1, len(samples) // 12)
        print("\nsamples (hours, MiB): " + ", ".join(f"{x:.2f} {y / 1024:.1f}" for x, y in samples[::step]))
    finally:
        for c in b("ps", "-aq", check=False).stdout.decode().split():
            b("rm", "-f", c, check=False)
        daemon.terminate()
        daemon.wait()
        time.sleep(2)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench/soak.py needs root")
    main()
