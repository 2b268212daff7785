#!/usr/bin/env python3
"""What it costs to put a new process into a cgroup on this host, the two ways: its parent writes
its pid into cgroup.procs (the kernel's global migration lock, taken as a writer), or the process
writes 0 into v1's tasks itself (a thread moving itself skips that lock). Interleaved, medians.
Needs root and cgroup v1 hierarchies (hybrid or legacy); makes and removes /berth-bench-join in
cpu, memory, pids and freezer.
"""
import os
import statistics
import sys
import time

ROUNDS = int(os.environ.get("ROUNDS", "20"))
CONTROLLERS = ["cpu", "memory", "pids", "freezer"]


def child_joins_itself(dirs):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        t = time.perf_counter()
        for d in dirs:
            with open(os.path.join(d, "tasks"), "w") as f:
                f.write("0")
        os.write(w, str(time.perf_counter() - t).encode())
        os._exit(0)
    os.close(w)
    took = float(os.read(r, 64))
    os.close(r)
    os.waitpid(pid, 0)
    return took


def parent_moves_child(dirs):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    os.close(r)
    t = time.perf_counter()
    for d in dirs:
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write(str(pid))
    took = time.perf_counter() - t
    os.write(w, b"x")
    os.close(w)
    os.waitpid(pid, 0)
    return took


def main():
    dirs = [f"/sys/fs/cgroup/{c}/berth-bench-join" for c in CONTROLLERS]
    if not all(os.path.isdir(os.path.dirname(d)) for d in dirs):
        sys.exit("needs cgroup v1 hierarchies for " + ", ".join(CONTROLLERS))
    for d in dirs:
        os.makedirs(d, exist_ok=True)
    try:
        procs, tasks = [], []
        for _ in range(ROUNDS):
            procs.append(parent_moves_child(dirs))
            time.sleep(0.05)
            tasks.append(child_joins_itself(dirs))
            time.sleep(0.05)
    finally:
        for d in dirs:
            os.rmdir(d)
    print(f"## joining {len(dirs)} v1 hierarchies ({ROUNDS} interleaved rounds)\n")
    print("| how | median | min | max |")
    print("|---|---|---|---|")
    for name, xs in [("parent writes the pid to cgroup.procs", procs), ("process writes 0 to tasks itself", tasks)]:
        print(f"| {name} | {statistics.median(xs)*1000:.2f} ms | {min(xs)*1000:.2f} ms | {max(xs)*1000:.2f} ms |")


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench/cgroup_join.py needs root")
    main()
