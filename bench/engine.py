#!/usr/bin/env python3
"""The engine path, side by side: `run --rm`, `exec`, 100 × `run -d`, `ps`, `rm -f` (answered, and
until the layers are gone), and memory per running container, for berth driven by its own CLI
and by the docker CLI (so every figure has a same-client row beside Docker's), Docker (a peer
dockerd, when DOCKER_PEER or /run/peer-docker/docker.sock is there) and `crun run` of a bundle
(timed inside the private mount namespace it needs here, warmed up like the rest).
Interleaved rounds, medians; the 100 × `run -d` alternate between berth and Docker in blocks of 10
with a pause between blocks. Needs root and release binaries (bench/run.sh builds them).
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import busybox_rootfs, env_for, rss_kib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BERTH_BIN", os.path.join(ROOT, "target", "dist"))  # scripts/build-release.sh
ROUNDS = int(os.environ.get("ROUNDS", "15"))
N_DETACHED = int(os.environ.get("N_DETACHED", "100"))
BLOCK = int(os.environ.get("BLOCK", "10"))
SETTLE = float(os.environ.get("SETTLE", "1.0"))
PEER = os.environ.get("DOCKER_PEER", "unix:///run/peer-docker/docker.sock")
# crun 1.8 refuses this host's hybrid cgroups: it runs in a private mount namespace with the
# cgroup2 mount hidden. One helper process enters it once and times each `crun run` itself, so
# crun's figure carries no wrapper (unshare, a shell, an umount) that the others do not.
CRUN_HELPER = r"""
import subprocess, sys, time
for line in sys.stdin:
    t = time.perf_counter()
    r = subprocess.run(line.split(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    print(time.perf_counter() - t if r.returncode == 0 else "failed: " + r.stderr.decode().strip(), flush=True)
"""


class Crun:
    def __init__(self, run_dir, bundle):
        self.cmd = ["crun", "--root", f"{run_dir}/crun", "run", "--bundle", bundle]
        self.p = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             'umount /sys/fs/cgroup/unified 2>/dev/null; exec python3 -c "$0"', CRUN_HELPER],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, name):
        self.p.stdin.write(" ".join(self.cmd + [name]) + "\n")
        self.p.stdin.flush()
        out = self.p.stdout.readline().strip()
        if out.startswith("failed") or not out:
            raise SystemExit(f"crun run: {out}")
        return float(out)

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def sh(cmd, env=None, check=True, **kw):
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    if check and r.returncode != 0:
        raise SystemExit(f"{cmd} failed: {r.stderr.decode()}")
    return r


def timed(cmd, env=None):
    t = time.perf_counter()
    sh(cmd, env=env)
    return time.perf_counter() - t


def pss_kib(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def pids_of(name):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/comm") as f:
                    if f.read().strip() == name:
                        out.append(int(p))
            except OSError:
                pass
    return out


def shims_of(work):
    """berth-shim processes started for this run (their command line names its directory)."""
    out = []
    for p in pids_of("berth-shim"):
        try:
            with open(f"/proc/{p}/cmdline") as f:
                if work in f.read():
                    out.append(p)
        except OSError:
            pass
    return out


def med(xs):
    return statistics.median(xs)


def layers_left(work, run_dir):
    """What a removed container still holds on disk: its writable layer (snapshot directories
    other than the image's, removals' `.rm-` ones included), its bundle, its rootfs mount."""
    snaps = os.path.join(work, "data", "image", "snapshots")
    layers = [e for e in os.listdir(snaps) if os.path.exists(os.path.join(snaps, e, "active.json")) or e.startswith(".rm-")]
    bundles = os.listdir(os.path.join(run_dir, "exec", "containers"))
    with open("/proc/self/mountinfo") as f:
        mounts = [l for l in f if f" {run_dir}/exec/containers/" in l]
    return layers or bundles or mounts


def main():
    # berthd's state is kept as the peer dockerd's is (/var/lib/peer-docker-*, /run/peer-docker)
    # and as berth keeps its own by default (/var/lib/berth, /run/berth): in /var/lib and /run,
    # in directories that stay from one run to the next. On this machine's ext4 (no journal) a
    # new inode skips every inode freed in the last 30 s: creating a file in /tmp, churned by the
    # tests, took 0.3 ms against 0.1 ms in /var/lib, and a run right after one that deleted its
    # whole state directory found every berth command slower by half. The inputs (rootfs, tar,
    # crun's bundle) go to a temporary directory elsewhere. `rm -rf` the two to start afresh.
    work = os.environ.get("BENCH_DATA", "/var/lib/berth-bench")
    run_dir = os.environ.get("BENCH_RUN", "/run/berth-bench")
    inputs = tempfile.mkdtemp(prefix="berth-bench-inputs-")
    os.makedirs(work, exist_ok=True)
    os.makedirs(run_dir, exist_ok=True)
    sock = f"unix://{work}/berth.sock"
    if os.path.exists(f"{work}/berth.sock"):
        os.unlink(f"{work}/berth.sock")  # the last run's berthd is gone: we wait for a new one
    benv = env_for(sock)
    daemon = subprocess.Popen(
        [os.path.join(BIN, "berthd"), "--data-root", f"{work}/data", "--exec-root", f"{run_dir}/exec", "-H", sock,
         "--config-file", f"{work}/none.json"],
        stderr=open(f"{work}/berthd.log", "w"))
    berth = os.path.join(BIN, "berth")
    try:
        for _ in range(100):
            if os.path.exists(f"{work}/berth.sock"):
                break
            time.sleep(0.05)
        idle_rss = rss_kib(daemon.pid)
        fs = os.path.join(inputs, "rootfs")
        busybox_rootfs(fs)
        tar = os.path.join(inputs, "busybox.tar")
        sh(["tar", "-C", fs, "-cf", tar, "."])
        sh([berth, "import", tar, "busybox:latest"], env=benv)
        docker = shutil.which("docker")
        peer = docker and PEER.startswith("unix://") and os.path.exists(PEER[len("unix://"):])
        penv = env_for(PEER) if peer else None
        if peer and sh([docker, "image", "inspect", "busybox"], env=penv, check=False).returncode != 0:
            sh([docker, "import", tar, "busybox:latest"], env=penv)
        bundle = os.path.join(inputs, "bundle")
        os.makedirs(bundle)
        shutil.copytree(fs, os.path.join(bundle, "rootfs"), symlinks=True)
        sh([os.path.join(BIN, "berth-runc"), "spec", "--bundle", bundle])
        import json
        cfg = json.load(open(os.path.join(bundle, "config.json")))
        cfg["process"]["terminal"] = False
        cfg["process"]["args"] = ["true"]
        json.dump(cfg, open(os.path.join(bundle, "config.json"), "w"))

        run = ["run", "--rm", "--network", "none", "busybox", "true"]
        cmds = {"berth run": ([berth] + run, benv)}
        if docker:
            cmds["docker CLI → berthd"] = ([docker] + run, benv)
        if peer:
            cmds["docker CLI → dockerd"] = ([docker] + run, penv)
        crun = Crun(run_dir, bundle) if shutil.which("crun") else None
        if crun:
            cmds["crun run (bundle)"] = (crun, None)
        # One warm-up run each, crun's included.
        for k, (c, e) in cmds.items():
            if isinstance(c, Crun):
                c.run("warm")
            else:
                sh(c, env=e)
        times = {k: [] for k in cmds}
        for i in range(ROUNDS):
            for k, (c, e) in cmds.items():
                times[k].append(c.run(f"c{i}") if isinstance(c, Crun) else timed(c, env=e))
        if crun:
            crun.close()
        print(f"## run --rm --network none busybox true ({ROUNDS} interleaved rounds)\n")
        print("| command | median | min | max |")
        print("|---|---|---|---|")
        for k, ts in times.items():
            print(f"| {k} | {med(ts)*1000:.1f} ms | {min(ts)*1000:.1f} ms | {max(ts)*1000:.1f} ms |")
        base = med(times["berth run"])
        for k in times:
            if k != "berth run":
                print(f"\nberth run / {k}: {base / med(times[k]):.3f}")
        if "docker CLI → dockerd" in times and "docker CLI → berthd" in times:
            print(f"docker CLI → berthd / docker CLI → dockerd: {med(times['docker CLI → berthd']) / med(times['docker CLI → dockerd']):.3f}")

        # exec
        sh([berth, "run", "-d", "--name", "ex", "--network", "none", "busybox", "sleep", "3600"], env=benv)
        ex = {"berth exec": ([berth, "exec", "ex", "true"], benv)}
        if docker:
            ex["docker CLI exec → berthd"] = ([docker, "exec", "ex", "true"], benv)
        if peer:
            sh([docker, "rm", "-f", "ex"], env=penv, check=False)
            sh([docker, "run", "-d", "--name", "ex", "--network", "none", "busybox", "sleep", "3600"], env=penv)
            ex["docker exec → dockerd"] = ([docker, "exec", "ex", "true"], penv)
        et = {k: [] for k in ex}
        for _ in range(ROUNDS):
            for k, (c, e) in ex.items():
                et[k].append(timed(c, env=e))
        print(f"\n## exec CTR true ({ROUNDS} interleaved rounds)\n")
        print("| command | median | min | max |")
        print("|---|---|---|---|")
        for k, ts in et.items():
            print(f"| {k} | {med(ts)*1000:.1f} ms | {min(ts)*1000:.1f} ms | {max(ts)*1000:.1f} ms |")
        if peer:
            print(f"\nberth exec / docker exec → dockerd: {med(et['berth exec']) / med(et['docker exec → dockerd']):.3f}")
            if "docker CLI exec → berthd" in et:
                print(f"docker CLI exec → berthd / docker exec → dockerd: "
                      f"{med(et['docker CLI exec → berthd']) / med(et['docker exec → dockerd']):.3f}")
        sh([berth, "rm", "-f", "ex"], env=benv)
        if peer:
            sh([docker, "rm", "-f", "ex"], env=penv)

        # N detached containers, alternating berth and Docker in blocks of BLOCK, so a spell of
        # this machine weighs on both alike; a pause after each block lets the engine just
        # measured finish its background work (dockerd's and containerd's go on well after
        # `docker run -d` returns) before the other one is timed. Twice: berthd driven by the
        # berth CLI, then by the docker CLI (the same client as Docker's figures).
        detached = ["run", "-d", "--network", "none", "busybox", "sleep", "3600"]
        clients = [("berth", berth)] + ([("docker CLI", docker)] if docker else [])
        rows = []
        for client, exe in clients:
            before = rss_kib(daemon.pid)
            bt, dt = [], []
            for i in range(0, N_DETACHED, BLOCK):
                for _ in range(min(BLOCK, N_DETACHED - i)):
                    bt.append(timed([exe] + detached, env=benv))
                time.sleep(SETTLE)
                if peer:
                    for _ in range(min(BLOCK, N_DETACHED - i)):
                        dt.append(timed([docker] + detached, env=penv))
                    time.sleep(SETTLE)
            shims = shims_of(run_dir)
            if client == "berth":
                shim_pss = pss_kib(shims)
                shim_rss = sum(rss_kib(p) for p in shims)
                after = rss_kib(daemon.pid)
                n = max(len(shims), 1)
                print(f"\n## memory with {N_DETACHED} running\n")
                print(f"- berth-shim: {len(shims)} processes, {shim_pss/n/1024:.3f} MiB PSS and {shim_rss/n/1024:.2f} MiB RSS each")
                print(f"- berthd: {idle_rss/1024:.1f} MiB RSS idle at start, {before/1024:.1f} MiB before the {N_DETACHED}, {after/1024:.1f} MiB with them running")
                print(f"- per container (shim PSS + berthd growth / N): {(shim_pss + max(after - before, 0))/n/1024:.3f} MiB")
                if peer:
                    dshims = pids_of("containerd-shim") + pids_of("containerd-shim-runc-v2")
                    if dshims:
                        print(f"- containerd shims: {len(dshims)}, {pss_kib(dshims)/len(dshims)/1024:.2f} MiB PSS each")
            ps = [timed([exe, "ps"], env=benv) for _ in range(ROUNDS)]
            ids = sh([exe, "ps", "-q"], env=benv).stdout.decode().split()
            t = time.perf_counter()
            sh([exe, "rm", "-f"] + ids, env=benv)
            answered = time.perf_counter() - t
            # berthd answers a removal once the container is gone from its table; its layer
            # and bundle are unmounted and deleted just after: the clock stops when they are.
            while layers_left(work, run_dir):
                time.sleep(0.005)
            gone = time.perf_counter() - t
            row = {"client": client, "start": sum(bt), "run": med(bt), "ps": med(ps), "rm": answered, "rm_gone": gone}
            if peer:
                dps = [timed([docker, "ps"], env=penv) for _ in range(ROUNDS)]
                dids = sh([docker, "ps", "-q"], env=penv).stdout.decode().split()
                t = time.perf_counter()
                r = sh(["timeout", "600", docker, "rm", "-f"] + dids, env=penv, check=False)
                row.update(d_start=sum(dt), d_run=med(dt), d_ps=med(dps), d_rm=(time.perf_counter() - t) if r.returncode == 0 else None)
            rows.append(row)
        print(f"\n## {N_DETACHED} × run -d busybox sleep 3600 (blocks of {BLOCK}, interleaved with Docker's)\n")
        print("| engine (client) | start all | median run -d | ps (median) | rm -f all: answered | rm -f all: layers gone |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| berth ({r['client']}) | {r['start']:.2f} s | {r['run']*1000:.1f} ms | {r['ps']*1000:.1f} ms | {r['rm']:.2f} s | {r['rm_gone']:.2f} s |")
            if "d_start" in r:
                d_rm = f"{r['d_rm']:.2f} s" if r["d_rm"] is not None else "over 600 s"
                print(f"| Docker (docker CLI, beside berth ({r['client']})) | {r['d_start']:.2f} s | {r['d_run']*1000:.1f} ms | {r['d_ps']*1000:.1f} ms | {d_rm} | |")
        for r in rows:
            if "d_start" in r:
                ratio = lambda a, b: f"{a / b:.3f}" if b else "n/a"
                print(f"\nberth ({r['client']}) / Docker: start {ratio(r['start'], r['d_start'])}, run -d {ratio(r['run'], r['d_run'])}, "
                      f"ps {ratio(r['ps'], r['d_ps'])}, rm -f answered {ratio(r['rm'], r['d_rm'])}, layers gone {ratio(r['rm_gone'], r['d_rm'])}")
    finally:
        for c in sh([berth, "ps", "-aq"], env=benv, check=False).stdout.decode().split():
            sh([berth, "rm", "-f", c], env=benv, check=False)
        daemon.terminate()
        daemon.wait()
        # Shims finish their containers' cleanup after the removals are answered: let them.
        deadline = time.time() + 10
        while time.time() < deadline and shims_of(run_dir):
            time.sleep(0.05)
        shutil.rmtree(inputs, ignore_errors=True)


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench/engine.py needs root")
    main()
