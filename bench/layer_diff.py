#!/usr/bin/env python3
"""Diff of a writable layer holding a 50 MB file into a layer tar on disk (what `docker commit`
does for the same change), median of interleaved rounds. Docker is measured alongside only where
a peer dockerd is running (DOCKER_HOST set, see ../shared/peers); otherwise the table says so."""
import os, platform, shutil, statistics, subprocess, sys, tempfile, time

ROUNDS = int(os.environ.get("ROUNDS", "9"))
HERE = os.path.dirname(os.path.abspath(__file__))
DIFF = os.path.join(HERE, "..", "target", "release", "examples", "diff_layer")
WORK_PARENT = os.environ.get("BENCH_DIR", "/var/tmp")


def main():
    work = tempfile.mkdtemp(prefix="berth-bench-diff-", dir=WORK_PARENT)
    try:
        upper = os.path.join(work, "upper")
        os.makedirs(os.path.join(upper, "data"))
        with open(os.path.join(upper, "data", "blob"), "wb") as f:
            f.write(os.urandom(50 * 1024 * 1024))
        subprocess.run("sync", check=True)
        times = []
        for i in range(ROUNDS + 1):
            out = os.path.join(work, f"layer-{i}.tar")
            start = time.perf_counter()
            subprocess.run([DIFF, upper, out], check=True, stdout=subprocess.DEVNULL)
            t = time.perf_counter() - start
            if i > 0:
                times.append(t)
            os.remove(out)
        print(f"{ROUNDS} rounds, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()} "
              f"({os.cpu_count()} CPUs, kernel {platform.release()}); 50 MiB file in the writable layer; target {WORK_PARENT}\n")
        print("| command | median | min | max |")
        print("|---|---|---|---|")
        print(f"| berth-store diff (tar written, hashed and fsynced) | {statistics.median(times):.3f} s | {min(times):.3f} s | {max(times):.3f} s |")
        if not os.environ.get("DOCKER_HOST"):
            print("| docker commit | not measured: no peer dockerd in this run | | |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
