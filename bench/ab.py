#!/usr/bin/env python3
"""A/B of two berth builds side by side: `run --rm --network none busybox true`, `exec CTR true`
and `run -d` (each removed after), alternating one command at a time between build A and build B,
each driven by its own CLI against its own berthd (own data root, exec root, socket, cgroup parent).
The machine favours whichever daemon runs second, so run it in both orders (ORDER=ab, ORDER=ba) and
combine the ratios (geometric mean). Needs root and release binaries of both builds:

    A=/path/to/old/target/release B=target/release ROUNDS=60 ORDER=ab bench/ab.py

CLIENT=docker times the docker CLI against each berthd instead of each build's own CLI.
"""
import os
import statistics
import subprocess
import tempfile
import time

from common import busybox_rootfs

ROUNDS = int(os.environ.get("ROUNDS", "60"))
CLIENT = os.environ.get("CLIENT", "berth")


def sh(cmd, env=None):
    return subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True).stdout


class Daemon:
    def __init__(self, name, bin_dir, work, tar):
        self.bin = bin_dir
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir)
        sock = os.path.join(self.dir, "berth.sock")
        open(os.path.join(self.dir, "none.json"), "w").write("{}")
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{sock}")
        self.p = subprocess.Popen(
            [os.path.join(bin_dir, "berthd"), "--data-root", f"{self.dir}/data", "--exec-root", f"{self.dir}/exec", "-H",
             f"unix://{sock}", "--config-file", f"{self.dir}/none.json", "--cgroup-parent", f"berth-ab-{name}"],
            stderr=open(os.path.join(self.dir, "berthd.log"), "w"))
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        self.cli(["import", tar, "busybox:latest"])
        self.cli(["run", "-d", "--name", "ex", "--network", "none", "busybox", "sleep", "3600"])

    def cli(self, args):
        return sh([os.path.join(self.bin, "berth")] + args, env=self.env)

    def timed(self, args):
        t = time.perf_counter()
        out = sh(["docker"] + args, env=self.env) if CLIENT == "docker" else self.cli(args)
        return time.perf_counter() - t, out

    def stop(self):
        subprocess.run([os.path.join(self.bin, "berth"), "rm", "-f", "ex"], env=self.env, capture_output=True)
        self.p.terminate()
        self.p.wait()


def main():
    order = os.environ.get("ORDER", "ab")
    work = tempfile.mkdtemp(prefix="berth-ab-")
    fs = os.path.join(work, "rootfs")
    busybox_rootfs(fs)
    tar = os.path.join(work, "busybox.tar")
    sh(["tar", "-C", fs, "-cf", tar, "."])
    ds = {"a": Daemon("a", os.environ["A"], work, tar), "b": Daemon("b", os.environ["B"], work, tar)}
    cases = {
        "run --rm": ["run", "--rm", "--network", "none", "busybox", "true"],
        "exec": ["exec", "ex", "true"],
        "run -d": ["run", "-d", "--network", "none", "busybox", "true"],
    }
    times = {(c, k): [] for c in cases for k in ds}
    try:
        for case, args in cases.items():
            for _ in range(3):  # warm-up
                for k in order:
                    _, out = ds[k].timed(args)
                    if case == "run -d":
                        ds[k].cli(["rm", "-f", out.strip()])
            for _ in range(ROUNDS):
                for k in order:
                    t, out = ds[k].timed(args)
                    times[(case, k)].append(t)
                    if case == "run -d":
                        ds[k].cli(["rm", "-f", out.strip()])
        print(f"order {order}, {ROUNDS} rounds, client {CLIENT}")
        for case in cases:
            a = statistics.median(times[(case, "a")])
            b = statistics.median(times[(case, "b")])
            print(f"{case}: A {a * 1000:.2f} ms, B {b * 1000:.2f} ms, B/A {b / a:.3f}")
    finally:
        for d in ds.values():
            d.stop()
        subprocess.run(["rm", "-rf", work])
        # The daemons' (empty) cgroup parents.
        subprocess.run("for d in /sys/fs/cgroup/berth-ab-? /sys/fs/cgroup/*/berth-ab-?; do [ -d \"$d\" ] && rmdir \"$d\"; done",
                       shell=True)


if __name__ == "__main__":
    main()
