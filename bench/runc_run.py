#!/usr/bin/env python3
"""`berth-runc run` of a busybox bundle running `true`, interleaved with `runc run` and
`crun run` of the same bundle. Prints medians of wall time and peak RSS as a markdown table.

crun 1.8 refuses this host's hybrid cgroups, so it runs in a private mount namespace with
/sys/fs/cgroup/unified unmounted; berth-runc is also measured under that same wrapper so the
wrapper's cost is visible rather than hidden.
"""
import json, os, platform, shutil, statistics, subprocess, sys, tempfile, time

ROUNDS = int(os.environ.get("ROUNDS", "20"))
BERTH = os.environ.get("BERTH_RUNC", os.path.join(os.path.dirname(__file__), "..", "target", "release", "berth-runc"))
WRAP = ["unshare", "-m", "--propagation", "private", "sh", "-c", 'umount /sys/fs/cgroup/unified 2>/dev/null; exec "$@"', "sh"]


def make_bundle(d):
    rootfs = os.path.join(d, "rootfs")
    for sub in ["bin", "etc", "proc", "sys", "dev", "tmp"]:
        os.makedirs(os.path.join(rootfs, sub))
    shutil.copy("/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
    for applet in subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True).stdout.split():
        if applet != "busybox":
            os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    subprocess.run([BERTH, "spec", "--bundle", d], check=True)
    path = os.path.join(d, "config.json")
    spec = json.load(open(path))
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["true"]
    json.dump(spec, open(path, "w"))


def measure(argv):
    """Wall time of one run, and its peak RSS in KiB from a separate run under GNU time (a
    child forked from Python would report Python's own pre-exec RSS)."""
    start = time.perf_counter()
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if p.returncode != 0:
        sys.exit(f"{argv} failed ({p.returncode}): {p.stderr.decode()}")
    return elapsed


def peak_rss(argv):
    # GNU time goes inside the wrapper, so it measures the runtime, not unshare and sh.
    n = len(WRAP) if argv[:len(WRAP)] == WRAP else 0
    with tempfile.NamedTemporaryFile("r") as out:
        timed = argv[:n] + ["/usr/bin/time", "-f", "%M", "-o", out.name] + argv[n:]
        subprocess.run(timed, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        return int(out.read().strip().splitlines()[-1])


def main():
    work = tempfile.mkdtemp(prefix="berth-bench-")
    try:
        run_all(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_all(work):
    bundle = os.path.join(work, "bundle")
    os.makedirs(bundle)
    make_bundle(bundle)
    roots = {n: os.path.join(work, "root-" + n) for n in ["berth", "runc", "crun"]}
    engines = {"berth-runc": lambda i: [BERTH, "--root", roots["berth"], "run", "--bundle", bundle, f"b{i}"]}
    engines["berth-runc (crun's wrapper)"] = lambda i: WRAP + [BERTH, "--root", roots["berth"], "run", "--bundle", bundle, f"w{i}"]
    if shutil.which("runc"):
        engines["runc"] = lambda i: ["runc", "--root", roots["runc"], "run", "--bundle", bundle, f"r{i}"]
    # The floor: a process in fresh pid/net/ipc/uts/mount namespaces, no rootfs or cgroup work.
    engines["unshare (floor)"] = lambda i: ["unshare", "--pid", "--net", "--ipc", "--uts", "--mount", "--fork", "true"]
    if shutil.which("crun"):
        engines["crun (wrapped)"] = lambda i: WRAP + ["crun", "--root", roots["crun"], "run", "--bundle", bundle, f"c{i}"]
    results = {n: [] for n in engines}
    rss = {n: [] for n in engines}
    for name, cmd in engines.items():  # warm-up, not recorded
        measure(cmd("warm"))
    for i in range(ROUNDS):
        for name, cmd in engines.items():
            results[name].append(measure(cmd(i)))
    for i in range(5):
        for name, cmd in engines.items():
            rss[name].append(peak_rss(cmd(f"m{i}")))

    ref = statistics.median(results["crun (wrapped)"]) if "crun (wrapped)" in results else None
    print(f"{ROUNDS} interleaved rounds, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{platform.node()} ({os.cpu_count()} CPUs, kernel {platform.release()})\n")
    print("| command | median wall | min | max | vs crun | median peak RSS |")
    print("|---|---|---|---|---|---|")
    for name, times in results.items():
        med = statistics.median(times)
        ratio = f"{med / ref:.2f}x" if ref else "-"
        peak = statistics.median(rss[name]) / 1024
        print(f"| {name} | {med * 1000:.1f} ms | {min(times) * 1000:.1f} ms | {max(times) * 1000:.1f} ms | {ratio} | {peak:.2f} MiB |")


if __name__ == "__main__":
    main()
