#!/usr/bin/env python3
"""Pull and push against a registry on 127.0.0.1 (Debian's docker-registry), side by side:
berth (its CLI against berthd) and Docker (the peer dockerd at DOCKER_PEER, when it is there),
with what the disk and the network alone take as the floor: `skopeo copy` of the image to an
OCI layout (download alone) and `tar -x` of its layers to the same disk (unpacking alone).

The image: ~80 MB compressed / ~160 MB in 6 layers (two trees of Python's standard library:
thousands of small files; random data that does not compress; a layer of 4,000 small files;
one small file), built once into BENCH_DIR. Interleaved rounds, medians and ratios:
- cold pull (the image and its layers removed first; the registry's files stay in the page
  cache, for both engines alike), warm re-pull (the image is there);
- push to an empty registry (a second registry, emptied before each push);
- berthd's peak RSS during a cold pull (VmHWM, reset before it through clear_refs).
Needs root, docker-registry and skopeo, and release binaries (scripts/build-release.sh).
"""
import gzip
import io
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

from common import free_port, status_kib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BERTH_BIN", os.path.join(ROOT, "target", "dist"))
ROUNDS = int(os.environ.get("ROUNDS", "5"))
PEER = os.environ.get("DOCKER_PEER", "unix:///run/peer-docker/docker.sock")
BENCH_DIR = os.environ.get("BENCH_DIR", "/var/tmp/berth-bench-pull")
WORK = os.environ.get("WORK", "/var/lib")  # the disk images land on, for tar -x as well


def sh(cmd, env=None, check=True, **kw):
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def timed(cmd, env=None):
    # Nobody pays for another's dirty pages: berth syncs the store's filesystem before it records
    # an image, tar -x below is synced too (Docker does not sync on a pull).
    os.sync()
    t = time.perf_counter()
    sh(cmd, env=env)
    return time.perf_counter() - t


def tar_tree(src, prefix):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            for name in sorted(filenames) + []:
                p = os.path.join(dirpath, name)
                if os.path.islink(p) or not os.path.isfile(p):
                    continue
                t.add(p, arcname=os.path.join(prefix, os.path.relpath(p, src)), recursive=False)
    return buf.getvalue()


def tar_files(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1_600_000_000
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_layout(out):
    """An OCI layout with the benchmark image, tagged `bench`."""
    import hashlib
    rng = random.Random(7)
    layers = [
        tar_tree("/usr/lib/python3.11", "usr/lib/python3.11"),
        tar_files([("data/random-a", os.urandom(24 << 20))]),
        tar_files([(f"small/{i // 100}/f{i}.txt", rng.randbytes(rng.randint(512, 4096)).hex().encode()) for i in range(4000)]),
        tar_files([("data/random-b", os.urandom(16 << 20))]),
        tar_tree("/usr/lib/python3", "usr/lib/python3"),
        tar_files([("etc/bench", b"bench\n")]),
    ]
    blobs = os.path.join(out, "blobs", "sha256")
    os.makedirs(blobs)

    def put(data):
        d = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, d), "wb") as f:
            f.write(data)
        return {"digest": f"sha256:{d}", "size": len(data)}

    descs, diff_ids = [], []
    for raw in layers:
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **put(gzip.compress(raw, 6, mtime=0))})
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/true"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    cdesc = {"mediaType": "application/vnd.oci.image.config.v1+json", **put(json.dumps(config).encode())}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": cdesc, "layers": descs}
    mdesc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", **put(json.dumps(manifest).encode()),
             "annotations": {"org.opencontainers.image.ref.name": "bench"}}
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [mdesc]}, f)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    with open(os.path.join(out, "raw-layers.json"), "w") as f:
        json.dump([d["digest"] for d in descs], f)
    return sum(d["size"] for d in descs), sum(len(l) for l in layers)


class Registry:
    def __init__(self, dir):
        self.dir = dir
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.proc = None
        os.makedirs(dir, exist_ok=True)
        with open(os.path.join(dir, "config.yml"), "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n"
                    f"  filesystem:\n    rootdirectory: {dir}/data\n  delete:\n    enabled: true\nhttp:\n  addr: {self.addr}\n")

    def start(self, empty=False):
        self.stop()
        if empty:
            shutil.rmtree(os.path.join(self.dir, "data"), ignore_errors=True)
        self.proc = subprocess.Popen(["docker-registry", "serve", os.path.join(self.dir, "config.yml")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(500):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.01)
        raise SystemExit("the registry did not start")

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait()
            self.proc = None


def main():
    if os.geteuid() != 0:
        raise SystemExit("needs root")
    for tool in ["docker-registry", "skopeo"]:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing (scripts/deps.sh installs it)")
    layout = os.path.join(BENCH_DIR, "layout")
    if not os.path.exists(os.path.join(layout, "index.json")):
        shutil.rmtree(layout, ignore_errors=True)
        os.makedirs(BENCH_DIR, exist_ok=True)
        comp, raw = build_layout(layout)
        print(f"built the image: {comp / 1e6:.1f} MB compressed, {raw / 1e6:.1f} MB uncompressed, 6 layers", file=sys.stderr)
    with open(os.path.join(layout, "raw-layers.json")) as f:
        layer_digests = json.load(f)
    comp = sum(os.path.getsize(os.path.join(layout, "blobs", "sha256", d.split(":")[1])) for d in layer_digests)

    work = tempfile.mkdtemp(prefix="berth-bench-pull-", dir=WORK)
    src = Registry(os.path.join(work, "src"))
    dst = Registry(os.path.join(work, "dst"))
    src.start()
    image = f"{src.addr}/bench/img:1"
    sh(["skopeo", "copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false", f"oci:{layout}:bench", f"docker://{image}"])
    data, exec_root = os.path.join(work, "berth-data"), os.path.join(work, "berth-exec")
    sock = os.path.join(exec_root, "berth.sock")
    berthd = subprocess.Popen([os.path.join(BIN, "berthd"), "--data-root", data, "--exec-root", exec_root,
                               "--config-file", os.path.join(work, "none.json")],
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "berthd.log"), "w"))
    for _ in range(500):
        if os.path.exists(sock):
            break
        time.sleep(0.01)
    benv = dict(os.environ, DOCKER_HOST=f"unix://{sock}", DOCKER_CONFIG=os.path.join(work, "cfg"))
    berth = [os.path.join(BIN, "berth")]
    peer = PEER.removeprefix("unix://")
    denv = dict(os.environ, DOCKER_HOST=PEER, DOCKER_CONFIG=os.path.join(work, "cfg")) if os.path.exists(peer) and shutil.which("docker") else None
    if denv is None:
        print(f"no peer dockerd at {PEER}: Docker's rows are left out", file=sys.stderr)

    r = {k: [] for k in ["berth cold", "docker cold", "skopeo", "tar -x", "berth warm", "docker warm", "berth push", "docker push", "rss"]}
    try:
        for n in range(ROUNDS):
            order = ["berth", "docker"] if n % 2 == 0 else ["docker", "berth"]
            for who in order:
                if who == "berth":
                    sh(berth + ["rmi", "-f", image], env=benv, check=False)
                    with open(f"/proc/{berthd.pid}/clear_refs", "w") as f:
                        f.write("5")
                    r["berth cold"].append(timed(berth + ["pull", "-q", image], env=benv))
                    r["rss"].append(status_kib(berthd.pid, "VmHWM"))
                    r["berth warm"].append(timed(berth + ["pull", "-q", image], env=benv))
                elif denv:
                    sh(["docker", "rmi", "-f", image], env=denv, check=False)
                    r["docker cold"].append(timed(["docker", "pull", "-q", image], env=denv))
                    r["docker warm"].append(timed(["docker", "pull", "-q", image], env=denv))
            # The floor: download alone, unpack alone.
            out = os.path.join(work, "skopeo-out")
            shutil.rmtree(out, ignore_errors=True)
            r["skopeo"].append(timed(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{image}", f"oci:{out}:x"]))
            shutil.rmtree(out, ignore_errors=True)
            tree = os.path.join(work, "tar-x")
            shutil.rmtree(tree, ignore_errors=True)
            os.makedirs(tree)
            os.sync()
            t = time.perf_counter()
            for d in layer_digests:
                sh(["tar", "-xzf", os.path.join(layout, "blobs", "sha256", d.split(":")[1]), "-C", tree])
            subprocess.run(["sync", "-f", tree])
            r["tar -x"].append(time.perf_counter() - t)
            shutil.rmtree(tree, ignore_errors=True)
            # Pushes to an empty registry.
            for who in order:
                dst.start(empty=True)
                target = f"{dst.addr}/bench/pushed:1"
                if who == "berth":
                    sh(berth + ["tag", image, target], env=benv)
                    r["berth push"].append(timed(berth + ["push", "-q", target], env=benv))
                    sh(berth + ["rmi", target], env=benv)
                elif denv:
                    sh(["docker", "tag", image, target], env=denv)
                    r["docker push"].append(timed(["docker", "push", "-q", target], env=denv))
                    sh(["docker", "rmi", target], env=denv)
    finally:
        if denv:
            sh(["docker", "rmi", "-f", image], env=denv, check=False)
        sh(berth + ["rmi", "-f", image], env=benv, check=False)
        berthd.terminate()
        berthd.wait()
        src.stop()
        dst.stop()
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in r.items() if v}
    print(f"pull/push, {time.strftime('%Y-%m-%d')}, {os.uname().nodename}, {os.cpu_count()} CPUs, {ROUNDS} interleaved rounds, "
          f"image {comp / 1e6:.0f} MB compressed in 6 layers, registry on 127.0.0.1")
    for k in ["berth cold", "docker cold", "skopeo", "tar -x", "berth warm", "docker warm", "berth push", "docker push"]:
        if k in med:
            print(f"  {k:12} median {med[k] * 1000:8.1f} ms   (min {min(r[k]) * 1000:.1f}, max {max(r[k]) * 1000:.1f})")
    print(f"  berthd peak RSS during a cold pull: median {med['rss'] / 1024:.1f} MiB (max {max(r['rss']) / 1024:.1f})")
    floor = max(med["skopeo"], med["tar -x"])
    print(f"  berth cold / max(download alone, tar -x alone) = {med['berth cold'] / floor:.2f}")
    if "docker cold" in med:
        print(f"  berth/docker: cold pull {med['berth cold'] / med['docker cold']:.2f}, warm re-pull {med['berth warm'] / med['docker warm']:.3f}, "
              f"push {med['berth push'] / med['docker push']:.2f}")


if __name__ == "__main__":
    main()
