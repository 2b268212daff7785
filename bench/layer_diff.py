#!/usr/bin/env python3
"""Diff of a writable layer holding a 50 MB file into a layer tar on disk, interleaved with
`docker commit` of a container holding the same change. Docker is measured alongside only where
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
        docker = bool(os.environ.get("DOCKER_HOST")) and shutil.which("docker") is not None
        ctr = None
        if docker:
            # The same change in a Docker container: a 50 MiB file in its writable layer.
            rootfs = os.path.join(work, "rootfs")
            os.makedirs(os.path.join(rootfs, "bin"))
            shutil.copy("/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
            for applet in ["sh", "head", "sleep"]:
                os.symlink("busybox", os.path.join(rootfs, "bin", applet))
            subprocess.run(f"tar -C {rootfs} -c . | docker import - berth-bench-busybox:latest", shell=True, check=True, stdout=subprocess.DEVNULL)
            ctr = subprocess.run(["docker", "run", "-d", "--network", "none", "berth-bench-busybox:latest", "sh", "-c",
                                  "head -c 52428800 /dev/urandom > /blob && sleep 3600"], check=True, capture_output=True, text=True).stdout.strip()
            time.sleep(3)
        results = {"berth-store diff (tar written, hashed and fsynced)": []}
        if ctr:
            results["docker commit"] = []
        for i in range(ROUNDS + 1):
            out = os.path.join(work, f"layer-{i}.tar")
            start = time.perf_counter()
            subprocess.run([DIFF, upper, out], check=True, stdout=subprocess.DEVNULL)
            t = time.perf_counter() - start
            os.remove(out)
            if i > 0:
                results["berth-store diff (tar written, hashed and fsynced)"].append(t)
            if ctr:
                start = time.perf_counter()
                subprocess.run(["docker", "commit", ctr, f"berth-bench-commit:{i}"], check=True, stdout=subprocess.DEVNULL)
                t = time.perf_counter() - start
                subprocess.run(["docker", "rmi", f"berth-bench-commit:{i}"], check=True, stdout=subprocess.DEVNULL)
                if i > 0:
                    results["docker commit"].append(t)
        if ctr:
            subprocess.run(["docker", "rm", "-f", ctr], check=True, stdout=subprocess.DEVNULL)
            subprocess.run(["docker", "rmi", "berth-bench-busybox:latest"], check=True, stdout=subprocess.DEVNULL)
        print(f"{ROUNDS} interleaved rounds, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()} "
              f"({os.cpu_count()} CPUs, kernel {platform.release()}); 50 MiB file in the writable layer; target {WORK_PARENT}\n")
        print("| command | median | min | max | vs docker commit |")
        print("|---|---|---|---|---|")
        ref = statistics.median(results["docker commit"]) if "docker commit" in results else None
        for name, ts in results.items():
            ratio = f"{statistics.median(ts) / ref:.2f}x" if ref else "-"
            print(f"| {name} | {statistics.median(ts):.3f} s | {min(ts):.3f} s | {max(ts):.3f} s | {ratio} |")
        if not ctr:
            print("| docker commit | not measured: no peer dockerd in this run | | | |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
