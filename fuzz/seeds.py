#!/usr/bin/env python3
"""Seed inputs for the fuzz targets, written under DIR/<target>/: small valid and nearly valid
examples of each input, so the fuzzer starts inside the formats instead of guessing them."""
import hashlib, io, json, os, sys, tarfile

out = sys.argv[1]

def put(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

def tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for e in entries:
            info = tarfile.TarInfo(e["name"])
            info.type = e.get("type", tarfile.REGTYPE)
            info.linkname = e.get("link", "")
            info.mode = e.get("mode", 0o644)
            info.devmajor, info.devminor = e.get("dev", (0, 0))
            data = e.get("data", b"")
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            t.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return buf.getvalue()

# Layers: every entry type, whiteouts, and the escapes that must be refused.
layers = {
    "plain": [{"name": "etc/", "type": tarfile.DIRTYPE, "mode": 0o755}, {"name": "etc/hostname", "data": b"x\n"}],
    "links": [{"name": "bin/", "type": tarfile.DIRTYPE}, {"name": "bin/busybox", "data": b"\x7fELF"},
              {"name": "bin/sh", "type": tarfile.SYMTYPE, "link": "busybox"}, {"name": "bin/ls", "type": tarfile.LNKTYPE, "link": "bin/busybox"},
              {"name": "abs", "type": tarfile.SYMTYPE, "link": "/etc/passwd"}],
    "whiteouts": [{"name": "a/.wh.b"}, {"name": "c/.wh..wh..opq"}, {"name": ".wh.d"}],
    "devices": [{"name": "dev/null", "type": tarfile.CHRTYPE, "dev": (1, 3)}, {"name": "fifo", "type": tarfile.FIFOTYPE}],
    "escape-dotdot": [{"name": "../outside", "data": b"no"}],
    "escape-symlink": [{"name": "up", "type": tarfile.SYMTYPE, "link": "../../.."}, {"name": "up/x", "data": b"no"}],
    "escape-abs-symlink": [{"name": "root", "type": tarfile.SYMTYPE, "link": "/"}, {"name": "root/x", "data": b"no"}],
    "escape-hardlink": [{"name": "h", "type": tarfile.LNKTYPE, "link": "../beside/sentinel"}],
}
for name, entries in layers.items():
    t = tar(entries)
    put("layer_apply", name + "-overlay", b"\x00" + t)
    put("layer_apply", name + "-delete", b"\x01" + t)

# Image archives: a docker-archive and an OCI layout of one tiny image.
layer = tar(layers["plain"])
diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                     "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
config_hex = hashlib.sha256(config).hexdigest()
layer_hex = hashlib.sha256(layer).hexdigest()
def archive(files):
    return tar([{"name": n, "data": d} for n, d in files])
put("image_load", "docker-archive", archive([
    (f"{config_hex}.json", config), (f"{layer_hex}/layer.tar", layer),
    ("manifest.json", json.dumps([{"Config": f"{config_hex}.json", "RepoTags": ["seed:latest"], "Layers": [f"{layer_hex}/layer.tar"]}]).encode()),
]))
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + config_hex, "size": len(config)},
                       "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + layer_hex, "size": len(layer)}]}).encode()
manifest_hex = hashlib.sha256(manifest).hexdigest()
put("image_load", "oci-layout", archive([
    ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
    ("index.json", json.dumps({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + manifest_hex,
                               "size": len(manifest), "annotations": {"io.containerd.image.name": "docker.io/library/seed:latest"}}]}).encode()),
    (f"blobs/sha256/{manifest_hex}", manifest), (f"blobs/sha256/{config_hex}", config), (f"blobs/sha256/{layer_hex}", layer),
]))
put("image_load", "wrong-digest", archive([(f"blobs/sha256/{'0' * 64}", b"not that"), ("index.json", b"{}")]))

for i, r in enumerate(["busybox", "busybox:1.36", "docker.io/library/busybox:latest", "localhost:5000/a/b-c_d.e:tag",
                       "ghcr.io/o/r@sha256:" + "a" * 64, "sha256:" + "b" * 64, "Upper/case", "a" * 300, "x:y:z", "[::1]:5000/r"]):
    put("reference", f"ref{i}", r)

for i, body in enumerate([
    {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Binds": ["/tmp:/data:ro,rslave"], "Sysctls": {"net.ipv4.ip_forward": "1"},
      "Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/n", "CgroupPermissions": "rw"}], "Ulimits": [{"Name": "nofile", "Soft": 1, "Hard": 2}],
      "Memory": 67108864, "NanoCpus": 500000000, "CpusetCpus": "0", "CapAdd": ["NET_ADMIN"], "SecurityOpt": ["no-new-privileges"],
      "Mounts": [{"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1024}}], "ExtraHosts": ["a:1.2.3.4"], "Dns": ["1.1.1.1"],
      "LogConfig": {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "2"}}, "CgroupParent": "/p", "NetworkMode": "container:x"}},
    {"Image": "busybox", "Healthcheck": {"Test": ["NONE"]}, "Volumes": {}, "Labels": {"a": "b"}, "Env": ["A=1"]},
    {"AttachStdin": True, "Cmd": ["sh"], "DetachKeys": "ctrl-p,ctrl-q", "Tty": True, "User": "1:2", "WorkingDir": "/"},
]):
    put("api_request", f"body{i}", json.dumps(body))
put("api_request", "query", "all=1&limit=3&size=true&filters=%7B%22status%22%3A%5B%22running%22%5D%2C%22label%22%3A%7B%22a%3Db%22%3Atrue%7D%7D")
