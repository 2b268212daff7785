"""What the benchmarks share: reading a process's memory and descriptors from /proc, and the
busybox root filesystem every one of them runs (from the host's busybox-static)."""
import os
import shutil
import socket
import subprocess


def status_kib(pid, field="VmRSS"):
    """A `kB` field of /proc/PID/status (VmRSS, RssAnon, …); 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pid):
    return status_kib(pid, "VmRSS")


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def busybox_rootfs(dir):
    """A root filesystem of the host's static busybox and its applets, root in passwd and group."""
    os.makedirs(dir)
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"]:
        os.makedirs(os.path.join(dir, d), exist_ok=True)
    shutil.copy("/bin/busybox", os.path.join(dir, "bin/busybox"))
    for applet in subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split():
        if applet != "busybox":
            os.symlink("busybox", os.path.join(dir, "bin", applet))
    with open(os.path.join(dir, "etc/passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    with open(os.path.join(dir, "etc/group"), "w") as f:
        f.write("root:x:0:\n")


def env_for(host):
    """The environment with DOCKER_HOST set to `host`."""
    e = dict(os.environ)
    e["DOCKER_HOST"] = host
    return e


def free_port():
    """A TCP port on 127.0.0.1 nothing uses now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_berthd(bin_dir, work, run_dir, bridge="berth-bench"):
    """A berthd of the benchmark's own (data in `work`, state and socket in `run_dir`, its own
    bridge), waited for; returns (process, DOCKER_HOST)."""
    import time
    os.makedirs(work, exist_ok=True)
    os.makedirs(run_dir, exist_ok=True)
    sock_path = f"{run_dir}/berth.sock"
    if os.path.exists(sock_path):
        os.unlink(sock_path)  # the last run's berthd is gone: we wait for a new one
    daemon = subprocess.Popen(
        [os.path.join(bin_dir, "berthd"), "--data-root", f"{work}/data", "--exec-root", f"{run_dir}/exec",
         "-H", f"unix://{sock_path}", "--config-file", f"{work}/none.json", "--bridge", bridge],
        stderr=open(f"{work}/berthd.log", "w"))
    for _ in range(100):
        if os.path.exists(sock_path):
            break
        time.sleep(0.05)
    return daemon, f"unix://{sock_path}"


def sh(cmd, env=None, check=True):
    """Run `cmd`, its output captured; a failure ends the benchmark with its message."""
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def docker_engines(docker, sock, peer, inputs):
    """The engines the docker CLI drives side by side: berthd at `sock`, and Docker's peer
    dockerd at `peer` when it is there; each gets a busybox image made from the host's busybox
    (in `inputs`) if it has none. Returns [(name, env)]."""
    fs = os.path.join(inputs, "rootfs")
    busybox_rootfs(fs)
    tar = os.path.join(inputs, "busybox.tar")
    sh(["tar", "-C", fs, "-cf", tar, "."])
    engines = [("berth", env_for(sock))]
    if peer.startswith("unix://") and os.path.exists(peer[len("unix://"):]):
        engines.append(("Docker", env_for(peer)))
    for _, env in engines:
        if sh([docker, "image", "inspect", "busybox"], env=env, check=False).returncode != 0:
            sh([docker, "import", tar, "busybox:latest"], env=env)
    return engines
