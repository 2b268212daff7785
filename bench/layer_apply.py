#!/usr/bin/env python3
"""Applying a ~120 MB, ~6,700-file gzip layer with berth-store (hashing the compressed and
uncompressed streams as a pull does), interleaved with
`gzip -dc LAYER | tar -x` of the same layer into the same file system. The layer is built from
real files under /usr (python3, perl, zoneinfo and locale data), so its size mix is a real one.
Prints medians as a markdown table."""
import os, platform, shutil, statistics, subprocess, sys, tempfile, time

ROUNDS = int(os.environ.get("ROUNDS", "9"))
HERE = os.path.dirname(os.path.abspath(__file__))
APPLY = os.path.join(HERE, "..", "target", "release", "examples", "apply_layer")
# On the disk under test, not tmpfs: the bench compares writing to the same ext4.
WORK_PARENT = os.environ.get("BENCH_DIR", "/var/tmp")
SOURCES = ["usr/lib/python3", "usr/share/perl", "usr/share/zoneinfo", "usr/share/locale"]
TARGET_FILES, TARGET_BYTES = 6700, 120 << 20


def build_layer(work):
    files, total = [], 0
    for src in SOURCES:
        for dirpath, _, names in sorted(os.walk(os.path.join("/", src))):
            for n in sorted(names):
                p = os.path.join(dirpath, n)
                if not os.path.isfile(p) or os.path.islink(p):
                    continue
                files.append(os.path.relpath(p, "/"))
                total += os.path.getsize(p)
                if len(files) >= TARGET_FILES or total >= TARGET_BYTES:
                    break
            if len(files) >= TARGET_FILES or total >= TARGET_BYTES:
                break
    listing = os.path.join(work, "files")
    with open(listing, "w") as f:
        f.write("\n".join(files) + "\n")
    layer = os.path.join(work, "layer.tar.gz")
    subprocess.run(f"tar -C / -cf - -T {listing} | gzip -6 > {layer}", shell=True, check=True)
    return layer, len(files), total


def timed(cmd):
    start = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)
    subprocess.run("sync", check=True)  # both must reach the disk, not just the page cache
    return time.perf_counter() - start


def main():
    work = tempfile.mkdtemp(prefix="berth-bench-layer-", dir=WORK_PARENT)
    try:
        layer, nfiles, nbytes = build_layer(work)
        results = {"berth-store apply": [], "gzip -dc | tar -x": []}
        for i in range(ROUNDS + 1):  # round 0 warms the caches and is not recorded
            for name in results:
                dest = os.path.join(work, f"dest-{i}-{len(name)}")
                os.mkdir(dest)
                cmd = f"{APPLY} {layer} {dest}" if name.startswith("berth") else f"gzip -dc {layer} | tar -x -C {dest}"
                t = timed(cmd)
                if i > 0:
                    results[name].append(t)
                shutil.rmtree(dest)
                subprocess.run("sync", check=True)
        ref = statistics.median(results["gzip -dc | tar -x"])
        print(f"{ROUNDS} interleaved rounds, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()} "
              f"({os.cpu_count()} CPUs, kernel {platform.release()}); layer: {nfiles} files, {nbytes / 2**20:.0f} MiB uncompressed, "
              f"{os.path.getsize(layer) / 2**20:.0f} MiB gzip; target {WORK_PARENT}\n")
        print("| command | median | min | max | vs gzip -dc \\| tar -x |")
        print("|---|---|---|---|---|")
        for name, ts in results.items():
            med = statistics.median(ts)
            print(f"| {name} | {med:.2f} s | {min(ts):.2f} s | {max(ts):.2f} s | {med / ref:.2f}x |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
