//! The API contract as Docker's clients see it: versions and their shapes, and the places where
//! the docker CLI and docker-py rely on dockerd's exact answers.

use berth_tests::{TestDaemon, have, json};
use serde_json::{Value, json};

/// docker-py against `d`, or None (skipped, counted) where it is not installed.
fn docker_py(d: &TestDaemon, script: &str, args: &[&str]) -> Option<berth_tests::Run> {
    let probe = std::process::Command::new("python3").args(["-c", "import docker"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(!berth_tests::in_ci(), "docker-py is missing: scripts/deps.sh installs it, and CI must run this test");
        berth_tests::skip("docker-py is not installed (pip install docker)");
        return None;
    }
    let socket = d.socket().to_string_lossy().into_owned();
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-c", script, &socket]).args(args);
    Some(berth_tests::run_command(&mut cmd))
}

fn docker_cli() -> bool {
    if have("docker") {
        return true;
    }
    assert!(!berth_tests::in_ci(), "the docker CLI is missing: scripts/deps.sh installs it, and CI must run this test");
    berth_tests::skip("the docker CLI is not installed");
    false
}

#[test]
fn every_version_from_1_24_to_1_50_is_served_with_its_shapes() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    for minor in 24..=50 {
        let (status, body) = d.request("GET", &format!("/v1.{minor}/containers/json?all=1"));
        assert_eq!(status, 200, "1.{minor}: {body}");
    }
    let image = |v: &str| json(&d.request("GET", &format!("/v{v}/images/busybox/json")).1);
    let newest = image("1.50");
    assert_eq!(newest, json(&d.request("GET", "/images/busybox/json").1), "no prefix is the newest");
    assert!(newest.get("VirtualSize").is_none() && newest.get("ContainerConfig").is_none() && newest.get("Container").is_none());
    assert!(newest["Config"].get("Hostname").is_none(), "1.50 shows the OCI image config: {}", newest["Config"]);
    let v49 = image("1.49");
    assert_eq!((v49["Config"]["Hostname"].clone(), v49["Config"]["Entrypoint"].clone()), (json!(""), Value::Null));
    assert!(v49.get("ContainerConfig").is_none());
    let v44 = image("1.44");
    assert_eq!(v44["ContainerConfig"]["Cmd"], v44["Config"]["Cmd"]);
    assert!(v44.get("VirtualSize").is_none());
    assert_eq!(image("1.43")["VirtualSize"], newest["Size"]);
    let list = |v: &str| json(&d.request("GET", &format!("/v{v}/images/json")).1);
    assert!(list("1.44")[0].get("VirtualSize").is_none());
    assert_eq!(list("1.41")[0]["VirtualSize"], list("1.41")[0]["Size"]);
    let (_, id) = d.post("/containers/create", r#"{"Image": "busybox", "Cmd": ["true"]}"#);
    let id = json(&id)["Id"].as_str().unwrap().to_string();
    let ctr = |v: &str| json(&d.request("GET", &format!("/v{v}/containers/{id}/json")).1);
    assert!(ctr("1.50")["HostConfig"].get("KernelMemory").is_none());
    assert_eq!(ctr("1.41")["HostConfig"]["KernelMemory"], 0);
    assert_eq!(ctr("1.50")["HostConfig"]["Runtime"], "runc", "the runtime clients name");
    let (status, body) = d.request("GET", "/v1.51/version");
    assert_eq!(
        (status, json(&body)["message"].clone()),
        (400, json!("client version 1.51 is too new. Maximum supported API version is 1.50"))
    );
    d.remove_all();
}

#[test]
fn docker_py_at_its_default_version_and_exec_framing_by_the_start_request() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let script = r#"
import docker, sys
# docker-py 7.1's default version (1.44), as a client that sets none gets it.
c = docker.DockerClient(base_url="unix://" + sys.argv[1], version=docker.constants.DEFAULT_DOCKER_API_VERSION)
assert c.api.api_version == "1.44", c.api.api_version
assert c.version()["ApiVersion"] == "1.50"
auto = docker.DockerClient(base_url="unix://" + sys.argv[1], version="auto")
assert auto.api.api_version == "1.50", auto.api.api_version
ctr = c.containers.run("busybox", ["sleep", "100"], detach=True, name="py")
# Created with a TTY, started without: the output comes in frames (docker-py reads them).
e = c.api.exec_create(ctr.id, ["echo", "framed"], tty=True)
out = c.api.exec_start(e["Id"], tty=False)
assert out == b"framed\r\n", out
# Created without, started with one: raw output.
e = c.api.exec_create(ctr.id, ["sh", "-c", "echo raw; echo err >&2"], tty=False)
out = c.api.exec_start(e["Id"], tty=True)
assert sorted(out.split()) == [b"err", b"raw"], out
code, out = ctr.exec_run(["echo", "plain"])
assert (code, out) == (0, b"plain\n"), (code, out)
# exec_run with tty=True: docker-py starts it with Tty too.
code, out = ctr.exec_run(["echo", "tty"], tty=True)
assert (code, out) == (0, b"tty\r\n"), (code, out)
ctr.remove(force=True)
# A bad archive: load answers 200 and the error in the stream; docker-py raises it.
try:
    c.images.load(b"this is not a tar")
    raise SystemExit("load of garbage succeeded")
except docker.errors.ImageLoadError as e:
    pass
# Not in a swarm: dockerd's 503, which docker-py's forced leave (a clean-up) takes as done.
assert c.swarm.leave(force=True) is True
try:
    c.swarm.leave()
    raise SystemExit("swarm leave succeeded")
except docker.errors.APIError as e:
    assert e.status_code == 503 and "not part of a swarm" in str(e), e
print("ok")
"#;
    let Some(r) = docker_py(&d, script, &[]) else { return };
    assert_eq!(r.stdout.trim(), "ok", "{}", r.stderr);
}

#[test]
fn the_docker_cli_gets_dockers_answers() {
    if !berth_tests::is_root() || !docker_cli() {
        return;
    }
    let Some(d) = TestDaemon::with_busybox() else { return };
    let r = d.docker(&["inspect", "nosuch"]).failure();
    assert!(r.stderr.contains("No such object: nosuch"), "{}", r.stderr);
    let r = d.docker(&["run", "--rm", "--log-driver", "nosuch", "busybox", "true"]).failure();
    assert!(r.stderr.contains("logger: no log driver named 'nosuch' is registered"), "{}", r.stderr);
    let r = d.docker(&["run", "--rm", "--runtime", "kata", "busybox", "true"]).failure();
    assert!(r.stderr.contains("Unknown runtime specified kata"), "{}", r.stderr);
    assert_eq!(d.docker(&["run", "--rm", "--runtime", "runc", "busybox", "echo", "runc"]).success().stdout, "runc\n");
    assert_eq!(d.docker(&["info", "--format", "{{.DefaultRuntime}}"]).success().stdout.trim(), "runc");
    let r = d.docker(&["swarm", "leave", "--force"]).failure();
    assert!(r.stderr.contains("This node is not part of a swarm"), "{}", r.stderr);
    let r = d.docker(&["node", "ls"]).failure();
    assert!(r.stderr.contains("This node is not a swarm manager"), "{}", r.stderr);
    let r = d.docker(&["load", "-i", "/etc/hostname"]).failure();
    assert!(!r.stderr.is_empty());

    // Mounts: binds, --mount binds and tmpfs mounts (not --tmpfs), as dockerd lists them.
    let host = tempfile::Builder::new().prefix("berth-bind-").tempdir().unwrap();
    let h = host.path().to_str().unwrap();
    let id = d
        .docker(&[
            "create",
            "-v",
            &format!("{h}:/b:ro"),
            "--mount",
            &format!("type=bind,source={h},target=/m"),
            "--mount",
            "type=tmpfs,target=/t",
            "--tmpfs",
            "/x",
            "busybox",
            "true",
        ])
        .success()
        .stdout;
    let mounts: Value = json(&d.docker(&["inspect", "--format", "{{json .Mounts}}", id.trim()]).success().stdout);
    assert_eq!(
        mounts,
        json!([
            {"Type": "bind", "Source": h, "Destination": "/b", "Mode": "ro", "RW": false, "Propagation": "rprivate"},
            {"Type": "bind", "Source": h, "Destination": "/m", "Mode": "", "RW": true, "Propagation": "rprivate"},
            {"Type": "tmpfs", "Source": "", "Destination": "/t", "Mode": "", "RW": true, "Propagation": ""},
        ])
    );
    let r = d.docker(&["ps", "-a", "--no-trunc", "--format", "{{.Mounts}}"]).success();
    assert_eq!(r.stdout.trim(), format!("{h},{h},"), "docker ps shows each mount's name or source");
    d.docker(&["rm", id.trim()]).success();

    // import --change: the Dockerfile instructions import takes.
    let tar = host.path().join("rootfs.tar");
    let made =
        std::process::Command::new("tar").arg("-C").arg(berth_tests::busybox_rootfs()).arg("-cf").arg(&tar).arg(".").status().unwrap();
    assert!(made.success());
    let tar = tar.to_str().unwrap();
    let args = ["import", "-c", r#"CMD ["sh", "-c", "echo $GREETING"]"#, "-c", "ENV GREETING=changed", "-c", "WORKDIR /tmp"];
    d.docker(&[&args[..], &[tar, "changed:v1"]].concat()).success();
    assert_eq!(d.docker(&["run", "--rm", "changed:v1"]).success().stdout, "changed\n");
    assert_eq!(d.docker(&["run", "--rm", "changed:v1", "pwd"]).success().stdout, "/tmp\n");
    let r = d.docker(&["import", "-c", "RUN true", tar, "bad"]).failure();
    assert!(r.stderr.contains("run is not a valid change command"), "{}", r.stderr);
    d.remove_all();
}

/// `--cpu-rt-period`/`--cpu-rt-runtime`: checked as dockerd checks them, and written to the
/// container's cgroup where the kernel schedules real-time tasks by group (cgroup v1).
#[test]
fn real_time_cpu_reaches_the_cgroup() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let r = d.berth(&["run", "--rm", "--cpu-rt-period", "1000", "--cpu-rt-runtime", "2000", "busybox", "true"]).failure();
    assert!(r.stderr.contains("cpu-rt-runtime cannot be higher than cpu-rt-period"), "{}", r.stderr);
    if !std::path::Path::new("/sys/fs/cgroup/cpu/cpu.rt_period_us").exists() {
        let r = d.berth(&["run", "--rm", "--cpu-rt-period", "500000", "busybox", "true"]).failure();
        assert!(r.stderr.contains("does not support CPU real-time scheduler"), "{}", r.stderr);
        return;
    }
    let id = d.berth(&["run", "-d", "--cpu-rt-period", "500000", "busybox", "sleep", "100"]).success().stdout;
    let pid = d.berth(&["inspect", "--format", "{{.State.Pid}}", id.trim()]).success().stdout;
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", pid.trim())).unwrap();
    let path = cgroups.lines().find_map(|l| l.split_once(":cpu,cpuacct:").or_else(|| l.split_once(":cpu:")).map(|(_, p)| p)).unwrap();
    let period = std::fs::read_to_string(format!("/sys/fs/cgroup/cpu{path}/cpu.rt_period_us")).unwrap();
    assert_eq!(period.trim(), "500000");
    d.remove_all();
}

/// bollard, the Rust SDK (its models are generated from Docker's swagger, so a field of the
/// wrong type fails its decoding), through the lifecycle berth implements.
#[test]
fn bollard_works() {
    use bollard::query_parameters as q;
    use futures_util::TryStreamExt as _;
    let Some(d) = TestDaemon::with_busybox() else { return };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let docker = bollard::Docker::connect_with_unix(&d.socket().to_string_lossy(), 30, bollard::API_DEFAULT_VERSION)
            .unwrap()
            .negotiate_version()
            .await
            .unwrap();
        assert_eq!(docker.client_version().to_string(), "1.50", "negotiated down to berthd's newest");
        docker.ping().await.unwrap();
        let v = docker.version().await.unwrap();
        assert_eq!(v.api_version.as_deref(), Some("1.50"));
        let info = docker.info().await.unwrap();
        assert_eq!(info.default_runtime.as_deref(), Some("runc"));

        let host = tempfile::Builder::new().prefix("berth-bind-").tempdir().unwrap();
        let body = bollard::models::ContainerCreateBody {
            image: Some("busybox".into()),
            cmd: Some(vec!["sh".into(), "-c".into(), "echo out; echo err >&2; sleep 100".into()]),
            labels: Some([("k".to_string(), "v".to_string())].into()),
            host_config: Some(bollard::models::HostConfig {
                binds: Some(vec![format!("{}:/h:ro", host.path().display())]),
                memory: Some(64 << 20),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = docker
            .create_container(Some(q::CreateContainerOptions { name: Some("bol".into()), ..Default::default() }), body)
            .await
            .unwrap();
        docker.start_container(&created.id, None::<q::StartContainerOptions>).await.unwrap();
        let ctr = docker.inspect_container("bol", None::<q::InspectContainerOptions>).await.unwrap();
        let state = ctr.state.unwrap();
        assert_eq!(state.running, Some(true));
        assert_eq!(ctr.host_config.unwrap().memory, Some(64 << 20));
        let mounts = ctr.mounts.unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!((mounts[0].destination.as_deref(), mounts[0].rw), (Some("/h"), Some(false)));
        let list = docker
            .list_containers(Some(q::ListContainersOptions {
                filters: Some([("label".to_string(), vec!["k=v".to_string()])].into()),
                ..Default::default()
            }))
            .await
            .unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].names.as_deref(), Some(&["/bol".to_string()][..]));

        let exec = docker
            .create_exec(
                "bol",
                bollard::models::ExecConfig {
                    cmd: Some(vec!["sh".into(), "-c".into(), "echo in-exec; exit 3".into()]),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        match docker.start_exec(&exec.id, None::<bollard::exec::StartExecOptions>).await.unwrap() {
            bollard::exec::StartExecResults::Attached { output, .. } => {
                let out: Vec<_> = output.try_collect().await.unwrap();
                assert_eq!(out.len(), 1, "{out:?}");
                assert!(matches!(&out[0], bollard::container::LogOutput::StdOut { message } if &message[..] == b"in-exec\n"), "{out:?}");
            }
            other => panic!("detached: {other:?}"),
        }
        let ran = docker.inspect_exec(&exec.id).await.unwrap();
        assert_eq!((ran.running, ran.exit_code), (Some(false), Some(3)));

        let logs: Vec<_> =
            docker.logs("bol", Some(q::LogsOptions { stdout: true, stderr: true, ..Default::default() })).try_collect().await.unwrap();
        let streams: Vec<String> = logs.iter().map(|l| format!("{l:?}")).collect();
        assert_eq!(logs.len(), 2, "{streams:?}");
        assert!(matches!(&logs[0], bollard::container::LogOutput::StdOut { .. }), "{streams:?}");
        assert!(matches!(&logs[1], bollard::container::LogOutput::StdErr { .. }), "{streams:?}");

        docker.stop_container("bol", Some(q::StopContainerOptions { t: Some(1), ..Default::default() })).await.unwrap();
        let waited: Vec<_> = docker.wait_container("bol", None::<q::WaitContainerOptions>).try_collect().await.unwrap_or_default();
        assert!(waited.iter().all(|w| w.status_code == 137), "{waited:?}");
        let images = docker.list_images(None::<q::ListImagesOptions>).await.unwrap();
        assert_eq!(images[0].repo_tags, vec!["busybox:latest".to_string()]);
        let image = docker.inspect_image("busybox").await.unwrap();
        assert_eq!(image.repo_tags, Some(vec!["busybox:latest".to_string()]));
        docker.remove_container("bol", Some(q::RemoveContainerOptions { force: true, ..Default::default() })).await.unwrap();
        let gone = docker.inspect_container("bol", None::<q::InspectContainerOptions>).await.unwrap_err();
        assert!(gone.to_string().contains("No such container"), "{gone}");
    });
}

/// A hijacked stream starts only once the client has read the 101 response: docker-py reads the
/// headers through a buffer and the stream from the socket, so output sent along with the
/// headers was lost (an exec's whole output, under load).
#[test]
fn nothing_is_sent_with_the_upgrade_response() {
    use std::io::{Read, Write};
    let Some(d) = TestDaemon::with_busybox() else { return };
    let id = d.berth(&["run", "-d", "busybox", "sleep", "100"]).success().stdout;
    let (_, exec) = d.post(&format!("/containers/{}/exec", id.trim()), r#"{"Cmd": ["echo", "hi"], "AttachStdout": true, "Tty": true}"#);
    let exec = json(&exec)["Id"].as_str().unwrap().to_string();
    let mut s = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    let body = r#"{"Detach": false, "Tty": true}"#;
    write!(
        s,
        "POST /exec/{exec}/start HTTP/1.1\r\nHost: berth\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Long enough for the exec to have run and written, had it been started.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut first = vec![0u8; 8192];
    let n = s.read(&mut first).unwrap();
    let headers = String::from_utf8_lossy(&first[..n]).into_owned();
    assert!(headers.starts_with("HTTP/1.1 101") && headers.ends_with("\r\n\r\n"), "{headers:?}");
    let mut rest = String::new();
    s.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "hi\r\n");
    d.remove_all();
}

/// `--format` is Go's text/template: the berth CLI prints what the docker CLI prints for the
/// same templates and the same container.
#[test]
fn format_templates_print_what_the_docker_cli_prints() {
    if !berth_tests::is_root() || !docker_cli() {
        return;
    }
    let Some(d) = TestDaemon::with_busybox() else { return };
    let host = tempfile::Builder::new().prefix("berth-bind-").tempdir().unwrap();
    let bind = format!("{}:/h:ro", host.path().display());
    d.berth(&["run", "-d", "--name", "tmpl", "-l", "k=v", "-l", "tier=front", "-v", &bind, "-m", "64m", "busybox", "sleep", "100"])
        .success();
    let templates = [
        "{{.State.Status}} {{.State.Running}} {{.State.ExitCode}}",
        "{{if .State.Running}}up{{else}}down{{end}}",
        "{{if not .State.Running}}down{{else if eq .State.Status \"running\"}}running{{end}}",
        "{{range $i, $e := .Config.Cmd}}{{$i}}={{$e}} {{end}}",
        "{{range $k, $v := .Config.Labels}}{{$k}}:{{$v}};{{end}}",
        "{{with .Config.Labels}}{{index . \"k\"}}{{end}}",
        "{{join .Config.Cmd \",\"}} {{len .Config.Cmd}}",
        "{{range .Mounts}}{{.Destination}}:{{.RW}}:{{.Mode}} {{end}}",
        "{{printf \"%-8s|%5d|%q\" .Name .State.ExitCode .Path}}",
        "{{json .Config.Labels}}",
        "{{upper .State.Status}} {{title \"a b\"}} {{split .Name \"/\"}} {{lower \"X\"}}",
        "{{if eq .State.Status \"exited\" \"running\"}}yes{{end}} {{if gt (len .Config.Cmd) 1}}many{{end}}",
        "{{- /* a comment */ -}} {{.Name | printf \"%q\"}}",
        "{{.HostConfig.Memory}} {{.Config.Labels}} {{.Config.Cmd}}",
        "{{$name := .Name}}{{range .Config.Cmd}}{{$name}}{{end}}",
        "{{and .State.Running .State.Pid | printf \"%v\"}} {{or .Config.WorkingDir \"none\"}}",
        "{{index .Config.Cmd 1}} {{slice .Name 1}} {{truncate .Name 3}}|{{pad .Name 1 1}}|",
    ];
    for t in templates {
        let ours = d.berth(&["inspect", "--format", t, "tmpl"]).success().stdout;
        let docker = d.docker(&["inspect", "--format", t, "tmpl"]).success().stdout;
        assert_eq!(ours, docker, "template {t:?}");
    }
    d.remove_all();
}

/// Container inspect beside dockerd's for the same `docker create`: the same keys in `Config`
/// and `HostConfig`, the same values (both at API 1.41, the peer dockerd 20.10's version).
#[test]
fn container_inspect_matches_dockerds() {
    if !berth_tests::is_root() || !docker_cli() {
        return;
    }
    let Some(peer) = berth_tests::peer_dockerd() else { return };
    let Some(d) = TestDaemon::with_busybox() else { return };
    let host = tempfile::Builder::new().prefix("berth-bind-").tempdir().unwrap();
    let name = format!("cmp-{}", std::process::id());
    let bind = format!("{}:/h:ro", host.path().display());
    let create =
        ["create", "--name", &name, "-e", "A=1", "-v", &bind, "--memory", "64m", "-l", "k=v", "--workdir", "/tmp", "busybox", "true"];
    let on_peer = |args: &[&str]| {
        let mut c = std::process::Command::new("docker");
        c.env("DOCKER_HOST", &peer).env("DOCKER_API_VERSION", "1.41").args(args);
        berth_tests::run_command(&mut c)
    };
    let tar = host.path().join("rootfs.tar");
    let made =
        std::process::Command::new("tar").arg("-C").arg(berth_tests::busybox_rootfs()).arg("-cf").arg(&tar).arg(".").status().unwrap();
    assert!(made.success());
    on_peer(&["import", tar.to_str().unwrap(), "busybox:latest"]).success();
    on_peer(&create).success();
    let theirs = json(&on_peer(&["inspect", &name]).success().stdout)[0].clone();
    on_peer(&["rm", "-f", &name]).success();
    d.docker(&create).success();
    let ours = json(&d.request("GET", &format!("/v1.41/containers/{name}/json")).1);
    for section in ["Config", "HostConfig"] {
        let (t, o) = (theirs[section].as_object().unwrap(), ours[section].as_object().unwrap());
        let keys = |m: &serde_json::Map<String, Value>| m.keys().cloned().collect::<std::collections::BTreeSet<_>>();
        assert_eq!(keys(o), keys(t), "{section}'s keys");
        for (k, v) in t {
            // The host's name is the container's ID; berth masks the paths Docker 25+ masks.
            if !["Hostname", "MaskedPaths"].contains(&k.as_str()) {
                assert_eq!(&o[k], v, "{section}.{k}");
            }
        }
    }
    assert_eq!(ours["Mounts"], theirs["Mounts"]);
    // The same keys everywhere else, down to the state's and the network settings'.
    let keys = |v: &Value| v.as_object().map(|m| m.keys().cloned().collect::<std::collections::BTreeSet<_>>());
    for section in ["", "State", "NetworkSettings", "GraphDriver"] {
        let (t, o) = if section.is_empty() { (&theirs, &ours) } else { (&theirs[section], &ours[section]) };
        assert_eq!(keys(o), keys(t), "{section}'s keys");
    }
    d.remove_all();
}

/// `ConsoleSize` (1.42) sizes a container's and an exec's terminal from the start, as the docker
/// CLI 28 sends it, instead of 0×0 until the first resize.
#[test]
fn console_size_sizes_the_terminal_from_the_start() {
    use std::io::{Read, Write};
    let Some(d) = TestDaemon::with_busybox() else { return };
    let (_, made) = d.post(
        "/containers/create",
        r#"{"Image": "busybox", "Cmd": ["stty", "size"], "Tty": true, "HostConfig": {"ConsoleSize": [30, 100]}}"#,
    );
    let id = json(&made)["Id"].as_str().unwrap().to_string();
    assert_eq!(d.post(&format!("/containers/{id}/start"), "").0, 204);
    berth_tests::wait_until("the container's exit", || {
        d.berth(&["inspect", "--format", "{{.State.Status}}", &id]).stdout.trim() == "exited"
    });
    assert_eq!(d.berth(&["logs", &id]).success().stdout.trim(), "30 100");

    let ctr = d.berth(&["run", "-d", "busybox", "sleep", "100"]).success().stdout;
    let (_, exec) = d.post(
        &format!("/containers/{}/exec", ctr.trim()),
        r#"{"Cmd": ["stty", "size"], "AttachStdout": true, "Tty": true, "ConsoleSize": [25, 90]}"#,
    );
    let exec = json(&exec)["Id"].as_str().unwrap().to_string();
    let mut s = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    let body = r#"{"Detach": false, "Tty": true, "ConsoleSize": [25, 90]}"#;
    write!(
        s,
        "POST /exec/{exec}/start HTTP/1.1\r\nHost: berth\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.ends_with("\r\n\r\n25 90\r\n"), "{out:?}");
    d.remove_all();
}

/// docker-py's networks and volumes against berthd: a user network with a container reached by
/// its alias, a published port, a named volume filled by one container and read by another,
/// `diff`, `commit` and the prunes.
#[test]
fn docker_py_networks_volumes_and_commit() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let script = r#"
import docker, sys
c = docker.DockerClient(base_url="unix://" + sys.argv[1], version="auto")
net = c.networks.create("pynet", driver="bridge", ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet="10.254.250.0/24")]), labels={"via": "py"})
vol = c.volumes.create("pyvol", labels={"via": "py"})
srv = c.containers.run("busybox", ["sh", "-c", "echo py > /data/f; sleep 60"], detach=True, name="pysrv",
                       network="pynet", volumes={"pyvol": {"bind": "/data", "mode": "rw"}}, ports={"80/tcp": None})
srv.reload()
assert srv.attrs["NetworkSettings"]["Networks"]["pynet"]["IPAddress"].startswith("10.254.250."), srv.attrs["NetworkSettings"]
assert srv.ports["80/tcp"][0]["HostPort"], srv.ports
net.reload()
assert srv.id in net.attrs["Containers"], net.attrs
net.connect(c.containers.create("busybox", ["true"], name="pylate"), aliases=["late"])
out = c.containers.run("busybox", ["sh", "-c", "cat /data/f; nslookup pysrv >/dev/null && echo resolved"], remove=True,
                       network="pynet", volumes=["pyvol:/data:ro"])
assert out == b"py\nresolved\n", out
assert [v.name for v in c.volumes.list(filters={"label": "via=py"})] == ["pyvol"]
assert [n.name for n in c.networks.list(names=["pynet"])] == ["pynet"]
changes = srv.diff()
img = srv.commit("pycommitted", "v1", message="from py")
assert img.attrs["Comment"] == "from py", img.attrs
srv.remove(force=True)
c.containers.get("pylate").remove()
assert c.volumes.prune(filters={"all": "true"})["VolumesDeleted"] == ["pyvol"]
assert c.networks.prune()["NetworksDeleted"] == ["pynet"]
print("ok", len(changes))
"#;
    let Some(r) = docker_py(&d, script, &[]) else { return };
    assert!(r.code == 0 && r.stdout.starts_with("ok"), "{r:?}");
}

/// docker-py's archive calls against berthd: `put_archive` of a tar, `get_archive` with its
/// stat, the errors a missing path gives, and `export`.
#[test]
fn docker_py_put_and_get_archive() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let script = r#"
import docker, io, sys, tarfile
c = docker.DockerClient(base_url="unix://" + sys.argv[1], version="auto")
ctr = c.containers.run("busybox", ["sleep", "60"], detach=True, name="pyarc")
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w") as t:
    data = b"from python\n"
    info = tarfile.TarInfo("dir/hello.txt"); info.size = len(data); info.uid = 7; info.gid = 8
    t.addfile(info, io.BytesIO(data))
assert ctr.put_archive("/tmp", buf.getvalue())
assert ctr.exec_run(["stat", "-c", "%u:%g", "/tmp/dir/hello.txt"]).output == b"7:8\n"
bits, stat = ctr.get_archive("/tmp/dir")
assert stat["name"] == "dir" and stat["mode"] & (1 << 31), stat
raw = b"".join(bits)
with tarfile.open(fileobj=io.BytesIO(raw)) as t:
    names = sorted(m.name for m in t.getmembers())
    assert names == ["dir", "dir/hello.txt"], names
    assert t.extractfile("dir/hello.txt").read() == b"from python\n"
try:
    ctr.get_archive("/nope")
    raise SystemExit("no error for a missing path")
except docker.errors.NotFound as e:
    assert "Could not find the file /nope" in str(e), e
with tarfile.open(fileobj=io.BytesIO(b"".join(ctr.export()))) as t:
    assert "tmp/dir/hello.txt" in [m.name.lstrip("./") for m in t.getmembers()]
ctr.remove(force=True)
print("ok")
"#;
    let Some(r) = docker_py(&d, script, &[]) else { return };
    assert!(r.code == 0 && r.stdout.starts_with("ok"), "{r:?}");
}

#[test]
fn docker_py_updates_limits_and_reads_logs_by_driver() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let script = r#"
import docker, sys, time
c = docker.DockerClient(base_url='unix://' + sys.argv[1])
lc = docker.types.LogConfig(type='json-file', config={'max-size': '1k', 'max-file': '3'})
cmd = ['sh', '-c', 'i=0; while [ $i -lt 200 ]; do echo line$i; i=$((i+1)); done; sleep 300']
ctr = c.containers.run('busybox', cmd, detach=True, network_mode='none', log_config=lc)
for _ in range(200):
    if ctr.logs(tail=1) == b'line199\n':
        break
    time.sleep(0.05)
# Rotated at 1 KiB into three files: the tail comes across them, the start is gone.
assert ctr.logs(tail=2) == b'line198\nline199\n', ctr.logs(tail=2)
assert not ctr.logs().startswith(b'line0\n'), 'three files of 1 KiB cannot hold 200 lines'
ctr.reload()
assert ctr.attrs['HostConfig']['LogConfig'] == {'Type': 'json-file', 'Config': {'max-size': '1k', 'max-file': '3'}}, ctr.attrs['HostConfig']['LogConfig']
# Memory alone is refused where no swap limit was set (dockerd's rule): both, then.
try:
    ctr.update(mem_limit='64m')
    raise SystemExit('memory without swap was taken')
except docker.errors.APIError as e:
    print('alone', e.status_code)
ctr.update(mem_limit='64m', memswap_limit='128m', cpu_shares=512, restart_policy={'Name': 'on-failure', 'MaximumRetryCount': 2})
ctr.reload()
hc = ctr.attrs['HostConfig']
got = (hc['Memory'], hc['MemorySwap'], hc['CpuShares'], hc['RestartPolicy'])
assert got == (64 << 20, 128 << 20, 512, {'Name': 'on-failure', 'MaximumRetryCount': 2}), hc
try:
    ctr.update(mem_limit='1k', memswap_limit='128m')
    raise SystemExit('a 1 KiB limit was taken')
except docker.errors.APIError as e:
    print('tiny', e.status_code, e.explanation)
ctr.remove(force=True)
quiet = c.containers.run('busybox', ['echo', 'gone'], detach=True, network_mode='none', log_config=docker.types.LogConfig(type='none'))
quiet.wait()
try:
    quiet.logs()
    raise SystemExit('logs of a container without a log')
except docker.errors.APIError as e:
    print('none', e.status_code, e.explanation)
quiet.remove()
"#;
    let Some(r) = docker_py(&d, script, &[]) else { return };
    let r = r.success();
    assert!(r.stdout.contains("alone 409"), "{}", r.stdout);
    assert!(r.stdout.contains("tiny 400 Minimum memory limit allowed is 6MB"), "{}", r.stdout);
    assert!(r.stdout.contains("none 501 configured logging driver does not support reading"), "{}", r.stdout);
    d.remove_all();
}
