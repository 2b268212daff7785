#!/usr/bin/env python3
"""The engine path, side by side: `run --rm`, `exec`, 100 × `run -d`, `ps`, `rm`, and memory per
running container, for berth (its CLI and the docker CLI against berthd), Docker (a peer dockerd,
when DOCKER_PEER or /run/peer-docker/docker.sock is there) and `crun run` of a bundle.
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "dist")  # scripts/build-release.sh
ROUNDS = int(os.environ.get("ROUNDS", "15"))
N_DETACHED = int(os.environ.get("N_DETACHED", "100"))
BLOCK = int(os.environ.get("BLOCK", "10"))
SETTLE = float(os.environ.get("SETTLE", "1.0"))
PEER = os.environ.get("DOCKER_PEER", "unix:///run/peer-docker/docker.sock")
WRAP = ["unshare", "-m", "--propagation", "private", "sh", "-c", 'umount /sys/fs/cgroup/unified 2>/dev/null; exec "$@"', "sh"]


def sh(cmd, env=None, check=True, **kw):
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    if check and r.returncode != 0:
        raise SystemExit(f"{cmd} failed: {r.stderr.decode()}")
    return r


def timed(cmd, env=None):
    t = time.perf_counter()
    sh(cmd, env=env)
    return time.perf_counter() - t


def env_for(host):
    e = dict(os.environ)
    e["DOCKER_HOST"] = host
    return e


def rootfs(dir):
    os.makedirs(dir)
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"]:
        os.makedirs(os.path.join(dir, d), exist_ok=True)
    shutil.copy("/bin/busybox", os.path.join(dir, "bin/busybox"))
    for applet in sh(["/bin/busybox", "--list"]).stdout.decode().split():
        if applet != "busybox":
            os.symlink("busybox", os.path.join(dir, "bin", applet))
    with open(os.path.join(dir, "etc/passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    with open(os.path.join(dir, "etc/group"), "w") as f:
        f.write("root:x:0:\n")


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


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


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
        rootfs(fs)
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
        if shutil.which("crun"):
            cmds["crun run (bundle)"] = (lambda i: WRAP + ["crun", "--root", f"{run_dir}/crun", "run", "--bundle", bundle, f"c{i}"], None)
        for c, _ in cmds.values():
            if not callable(c):
                sh(c, env=_)
        times = {k: [] for k in cmds}
        for i in range(ROUNDS):
            for k, (c, e) in cmds.items():
                times[k].append(timed(c(i) if callable(c) else c, env=e))
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
        sh([berth, "run", "-d", "--name", "ex", "busybox", "sleep", "3600"], env=benv)
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
            print(f"\nberth exec / docker exec: {med(et['berth exec']) / med(et['docker exec → dockerd']):.3f}")
        sh([berth, "rm", "-f", "ex"], env=benv)
        if peer:
            sh([docker, "rm", "-f", "ex"], env=penv)

        # N detached containers, alternating berth and Docker in blocks of BLOCK, so a spell of
        # this machine weighs on both alike; a pause after each block lets the engine just
        # measured finish its background work (dockerd's and containerd's go on well after
        # `docker run -d` returns) before the other one is timed.
        before = rss_kib(daemon.pid)
        detached = [berth, "run", "-d", "--network", "none", "busybox", "sleep", "3600"]
        bt, dt = [], []
        for i in range(0, N_DETACHED, BLOCK):
            for _ in range(min(BLOCK, N_DETACHED - i)):
                bt.append(timed(detached, env=benv))
            time.sleep(SETTLE)
            if peer:
                for _ in range(min(BLOCK, N_DETACHED - i)):
                    dt.append(timed([docker] + detached[1:], env=penv))
                time.sleep(SETTLE)
        berth_start = sum(bt)
        shims = shims_of(run_dir)
        shim_pss = pss_kib(shims)
        shim_rss = sum(rss_kib(p) for p in shims)
        after = rss_kib(daemon.pid)
        ps = [timed([berth, "ps"], env=benv) for _ in range(ROUNDS)]
        ids = sh([berth, "ps", "-q"], env=benv).stdout.decode().split()
        t = time.perf_counter()
        sh([berth, "rm", "-f"] + ids, env=benv)
        berth_rm = time.perf_counter() - t
        n = max(len(shims), 1)
        print(f"\n## memory with {N_DETACHED} running\n")
        print(f"- berth-shim: {len(shims)} processes, {shim_pss/n/1024:.3f} MiB PSS and {shim_rss/n/1024:.2f} MiB RSS each")
        print(f"- berthd: {idle_rss/1024:.1f} MiB RSS idle at start, {before/1024:.1f} MiB before the {N_DETACHED}, {after/1024:.1f} MiB with them running")
        print(f"- per container (shim PSS + berthd growth / N): {(shim_pss + max(after - before, 0))/n/1024:.3f} MiB")
        print(f"\n## {N_DETACHED} × run -d busybox sleep 3600 (blocks of {BLOCK}, interleaved with Docker's)\n")
        print("| engine | start all | median run -d | ps (median) | rm -f all |")
        print("|---|---|---|---|---|")
        print(f"| berth | {berth_start:.2f} s | {med(bt)*1000:.1f} ms | {med(ps)*1000:.1f} ms | {berth_rm:.2f} s |", flush=True)
        if peer:
            docker_start = sum(dt)
            dshims = pids_of("containerd-shim") + pids_of("containerd-shim-runc-v2")
            dshim_pss = pss_kib(dshims)
            dps = [timed([docker, "ps"], env=penv) for _ in range(5)]
            print(f"\nDocker: start all {docker_start:.2f} s (median {med(dt)*1000:.1f} ms), ps {med(dps)*1000:.1f} ms; "
                  f"berth / Docker start: {berth_start/docker_start:.3f}", flush=True)
            if dshims:
                print(f"containerd shims: {len(dshims)}, {dshim_pss/len(dshims)/1024:.2f} MiB PSS each", flush=True)
            dids = sh([docker, "ps", "-q"], env=penv).stdout.decode().split()
            t = time.perf_counter()
            r = sh(["timeout", "600", docker, "rm", "-f"] + dids, env=penv, check=False)
            docker_rm = time.perf_counter() - t
            if r.returncode == 0:
                print(f"Docker rm -f all: {docker_rm:.2f} s; berth / Docker rm: {berth_rm/docker_rm:.3f}")
            else:
                print(f"Docker rm -f all did not finish in {docker_rm:.0f} s")
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
