//! Pull (and push) against a real registry (Debian's docker-registry on 127.0.0.1), with the
//! docker CLI and berth's own CLI against berthd.

use berth_tests::{Compression, OciLayout, RegistryOptions, TestDaemon, TestRegistry, busybox_layer, json, tar_of};

fn docker_cli() -> bool {
    berth_tests::have("docker")
}

/// busybox plus two small layers, the second replacing a file of the first.
fn three_layer_image(compression: Compression) -> OciLayout {
    let mut l = OciLayout::new();
    l.image(
        &[busybox_layer(), tar_of(&[("srv/a.txt", b"first\n"), ("srv/b.txt", b"bee\n")]), tar_of(&[("srv/a.txt", b"second\n")])],
        compression,
        "amd64",
        &["cat", "/srv/a.txt"],
    );
    l.finish("1");
    l
}

#[test]
fn docker_pull_from_a_plain_registry_then_run_it() {
    if !berth_tests::is_root() || !docker_cli() {
        return;
    }
    let Some(reg) = TestRegistry::start(RegistryOptions::default()) else { return };
    let layout = three_layer_image(Compression::Gzip);
    reg.push_layout(layout.dir.path(), "test/three:1");
    let d = TestDaemon::start();
    let name = format!("{}/test/three:1", reg.addr);
    let out = d.docker(&["pull", &name]).success().stdout;
    assert!(out.contains("Pull complete") || out.contains(": Pulling from test/three"), "{out}");
    assert!(out.contains(&format!("Status: Downloaded newer image for {name}")), "{out}");
    assert_eq!(d.docker(&["run", "--rm", &name]).success().stdout, "second\n");
    // The repository digest is the manifest's, as the registry has it.
    let digest = reg.inspect("test/three:1")["Digest"].as_str().unwrap().to_string();
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    let inspect = json(&d.docker(&["image", "inspect", &name]).success().stdout)[0].clone();
    assert_eq!(inspect["RepoDigests"], serde_json::json!([format!("{}/test/three@{digest}", reg.addr)]));
    // Again: nothing to fetch.
    let again = d.docker(&["pull", &name]).success().stdout;
    assert!(again.contains(&format!("Status: Image is up to date for {name}")), "{again}");
    assert!(!again.contains("Downloading"), "{again}");
    // By digest.
    let by_digest = format!("{}/test/three@{digest}", reg.addr);
    d.docker(&["pull", &by_digest]).success();
    assert_eq!(d.docker(&["run", "--rm", &by_digest]).success().stdout, "second\n");
    // Its last tag gone, the repository's digest reference goes too, and so does the image.
    let rmi = d.docker(&["rmi", &name]).success().stdout;
    assert!(rmi.contains(&format!("Untagged: {by_digest}")) && rmi.contains("Deleted: sha256:"), "{rmi}");
    assert!(d.docker(&["images", "-q"]).success().stdout.trim().is_empty());
}

/// The docker CLI with its own config directory (where `login` stores credentials).
fn docker_in(d: &TestDaemon, config: &std::path::Path, args: &[&str]) -> berth_tests::Run {
    let mut c = std::process::Command::new("docker");
    c.env("DOCKER_HOST", format!("unix://{}", d.socket().display())).env("DOCKER_CONFIG", config).args(args);
    berth_tests::run_command(&mut c)
}

#[test]
fn login_then_pull_from_a_registry_with_basic_auth_over_tls() {
    if !berth_tests::is_root() || !docker_cli() {
        return;
    }
    let Some(reg) = TestRegistry::start(RegistryOptions { auth: true, tls: true }) else { return };
    reg.push_layout(three_layer_image(Compression::Gzip).dir.path(), "private/three:1");
    let certs = reg.certs_dir.clone().unwrap();
    // Without the registry's certs.d, its demand for a client certificate is not met.
    let no_certs = TestDaemon::start();
    let refused = no_certs.docker(&["pull", &format!("{}/private/three:1", reg.addr)]).failure();
    assert!(refused.stderr.to_lowercase().contains("certificate"), "{}", refused.stderr);
    drop(no_certs);
    let d = TestDaemon::start_with_config(&format!(r#"{{"certs-dir": "{}"}}"#, certs.display()));
    let config = tempfile::Builder::new().prefix("berth-docker-config-").tempdir().unwrap();
    let name = format!("{}/private/three:1", reg.addr);
    // Anonymous: refused, as Docker words it.
    let anon = docker_in(&d, config.path(), &["pull", &name]).failure();
    assert!(anon.stderr.contains("pull access denied for") && anon.stderr.contains("may require 'docker login'"), "{}", anon.stderr);
    let (user, pass) = reg.creds.clone().unwrap();
    let wrong = docker_in(&d, config.path(), &["login", "-u", &user, "-p", "wrong", &reg.addr]).failure();
    assert!(wrong.stderr.contains("401 Unauthorized"), "{}", wrong.stderr);
    let mut login = std::process::Command::new("docker");
    login
        .env("DOCKER_HOST", format!("unix://{}", d.socket().display()))
        .env("DOCKER_CONFIG", config.path())
        .args(["login", "-u", &user, "-p", &pass, &reg.addr]);
    let out = berth_tests::run_command(&mut login).success();
    assert!(out.stdout.contains("Login Succeeded"), "{}", out.stdout);
    // Stored as Docker stores it: base64 of user:password under the registry's address.
    let stored = json(&std::fs::read_to_string(config.path().join("config.json")).unwrap());
    let auth = stored["auths"][&reg.addr]["auth"].as_str().unwrap().to_string();
    let decoded =
        berth_tests::run_command(std::process::Command::new("sh").arg("-c").arg(format!("printf %s {auth} | base64 -d"))).success();
    assert_eq!(decoded.stdout, format!("{user}:{pass}"));
    docker_in(&d, config.path(), &["pull", &name]).success();
    assert_eq!(docker_in(&d, config.path(), &["run", "--rm", &name]).success().stdout, "second\n");
}

#[test]
fn an_index_gives_the_hosts_platform_or_the_one_asked_for_with_zstd_layers() {
    if !berth_tests::is_root() || !docker_cli() {
        return;
    }
    let Some(reg) = TestRegistry::start(RegistryOptions::default()) else { return };
    let mut layout = OciLayout::new();
    let host_arch = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    };
    let other = if host_arch == "amd64" { "arm64" } else { "amd64" };
    layout.image(&[busybox_layer(), tar_of(&[("which", b"host\n")])], Compression::Zstd, host_arch, &["cat", "/which"]);
    layout.image(&[busybox_layer(), tar_of(&[("which", b"other\n")])], Compression::Gzip, other, &["cat", "/which"]);
    layout.finish("multi");
    reg.push_layout(layout.dir.path(), "test/multi:multi");
    let d = TestDaemon::start();
    let name = format!("{}/test/multi:multi", reg.addr);
    d.docker(&["pull", &name]).success();
    assert_eq!(d.docker(&["run", "--rm", &name]).success().stdout, "host\n", "the host's platform, its layers zstd");
    let index_digest = reg.inspect("test/multi:multi")["Digest"].as_str().unwrap().to_string();
    let inspect = json(&d.docker(&["image", "inspect", &name]).success().stdout)[0].clone();
    assert_eq!(inspect["RepoDigests"][0], format!("{}/test/multi@{index_digest}", reg.addr), "the index's digest names it");
    // What the registry has, without pulling: the index and both platforms.
    let (status, body) = d.request("GET", &format!("/distribution/{name}/json"));
    assert_eq!(status, 200, "{body}");
    let dist = json(&body);
    assert_eq!(dist["Descriptor"]["digest"], index_digest.as_str());
    assert_eq!(dist["Descriptor"]["mediaType"], "application/vnd.oci.image.index.v1+json");
    let mut archs: Vec<&str> = dist["Platforms"].as_array().unwrap().iter().map(|p| p["architecture"].as_str().unwrap()).collect();
    archs.sort();
    assert_eq!(archs, ["amd64", "arm64"]);
    d.docker(&["pull", "--platform", &format!("linux/{other}"), &name]).success();
    let inspect = json(&d.docker(&["image", "inspect", &name]).success().stdout)[0].clone();
    assert_eq!(inspect["Architecture"], other);
    let none = d.docker(&["pull", "--platform", "linux/s390x", &name]).failure();
    assert!(none.stderr.contains("no matching manifest for linux/s390x in the manifest list entries"), "{}", none.stderr);
}

#[test]
fn missing_tags_and_repositories_fail_as_docker_says() {
    if !berth_tests::is_root() || !docker_cli() {
        return;
    }
    let Some(reg) = TestRegistry::start(RegistryOptions::default()) else { return };
    reg.push_layout(three_layer_image(Compression::None).dir.path(), "test/three:1");
    let d = TestDaemon::start();
    let missing = d.docker(&["pull", &format!("{}/test/three:nosuch", reg.addr)]).failure();
    assert!(
        missing.stderr.contains(&format!("manifest for {}/test/three:nosuch not found: manifest unknown", reg.addr)),
        "{}",
        missing.stderr
    );
    let repo = d.docker(&["pull", &format!("{}/test/nothing:1", reg.addr)]).failure();
    assert!(repo.stderr.contains("not found") || repo.stderr.contains("does not exist"), "{}", repo.stderr);
    // `docker run` of an image only the registry has: the CLI pulls it, then runs it.
    let run = d.docker(&["run", "--rm", &format!("{}/test/three:1", reg.addr)]).success();
    assert_eq!(run.stdout, "second\n");
    assert!(run.stderr.contains("Unable to find image"), "{}", run.stderr);
    // Nothing half-stored by the failures: only the one image.
    assert_eq!(d.docker(&["images", "-q"]).success().stdout.lines().count(), 1);
    // Every tag of the repository: the docker CLI's and berth's --all-tags.
    reg.push_layout(three_layer_image(Compression::Gzip).dir.path(), "test/three:2");
    let all = d.docker(&["pull", "--all-tags", &format!("{}/test/three", reg.addr)]).success().stdout;
    assert!(all.contains("2: Pulling from test/three"), "{all}");
    let tags = d.docker(&["images", "--format", "{{.Tag}}", &format!("{}/test/three", reg.addr)]).success().stdout;
    assert_eq!(tags.lines().collect::<std::collections::BTreeSet<_>>(), ["1", "2"].into_iter().collect());
    let e = TestDaemon::start();
    let all = e.berth(&["pull", "-a", &format!("{}/test/three", reg.addr)]).success().stdout;
    assert!(all.contains("Status: Downloaded newer image for") && all.ends_with(&format!("{}/test/three\n", reg.addr)), "{all}");
    let tags = e.berth(&["images", "--format", "{{.Tag}}", &format!("{}/test/three", reg.addr)]).success().stdout;
    assert_eq!(tags.lines().collect::<std::collections::BTreeSet<_>>(), ["1", "2"].into_iter().collect());
}

#[test]
fn push_then_pull_elsewhere_gives_the_same_image() {
    if !berth_tests::is_root() || !docker_cli() || !berth_tests::have("skopeo") {
        return;
    }
    let Some(reg) = TestRegistry::start(RegistryOptions::default()) else { return };
    let Some(d) = TestDaemon::with_busybox() else { return };
    let name = format!("{}/test/bb:1", reg.addr);
    d.docker(&["tag", "busybox", &name]).success();
    let out = d.docker(&["push", &name]).success().stdout;
    assert!(out.contains(&format!("The push refers to repository [{}/test/bb]", reg.addr)), "{out}");
    assert!(out.contains(": Pushed"), "{out}");
    let digest = reg.inspect("test/bb:1")["Digest"].as_str().unwrap().to_string();
    assert!(out.contains(&format!("1: digest: {digest} size: ")), "{out}");
    // Again: nothing to send.
    let again = d.docker(&["push", &name]).success().stdout;
    assert!(again.contains("Layer already exists") && !again.contains(": Pushed"), "{again}");
    // Into another repository of the same registry: mounted, not sent.
    let other = format!("{}/test/other:1", reg.addr);
    d.docker(&["tag", "busybox", &other]).success();
    let mounted = d.docker(&["push", &other]).success().stdout;
    assert!(mounted.contains("Mounted from test/bb"), "{mounted}");
    // skopeo reads it.
    let copy = tempfile::Builder::new().prefix("berth-skopeo-").tempdir().unwrap();
    let mut c = std::process::Command::new("skopeo");
    c.arg("copy").arg("--quiet").args(reg.src_flags()).arg(format!("docker://{name}")).arg(format!("oci:{}:x", copy.path().display()));
    berth_tests::run_command(&mut c).success();
    // Another daemon pulls the same image: the same ID, the same digest, and it runs.
    let id = d.docker(&["image", "inspect", "-f", "{{.Id}}", "busybox"]).success().stdout;
    let e = TestDaemon::start();
    e.docker(&["pull", &name]).success();
    assert_eq!(e.docker(&["image", "inspect", "-f", "{{.Id}}", &name]).success().stdout, id);
    let inspect = json(&e.docker(&["image", "inspect", &name]).success().stdout)[0].clone();
    assert_eq!(inspect["RepoDigests"][0], format!("{}/test/bb@{digest}", reg.addr));
    assert_eq!(e.docker(&["run", "--rm", &name, "echo", "pushed"]).success().stdout, "pushed\n");
    // A pulled image pushed again keeps its digest.
    let copy_name = format!("{}/test/copy:1", reg.addr);
    e.docker(&["tag", &name, &copy_name]).success();
    let out = e.docker(&["push", &copy_name]).success().stdout;
    assert!(out.contains(&format!("1: digest: {digest} ")), "{out}");
    // A committed image: its layer has no blob until the push gzips it from the layer itself.
    d.docker(&["run", "--name", "tocommit", "busybox", "sh", "-c", "echo committed > /c"]).success();
    let committed = format!("{}/test/committed:1", reg.addr);
    d.docker(&["commit", "tocommit", &committed]).success();
    d.docker(&["push", &committed]).success();
    e.docker(&["pull", &committed]).success();
    assert_eq!(e.docker(&["run", "--rm", &committed, "cat", "/c"]).success().stdout, "committed\n");
    d.docker(&["rm", "tocommit"]).success();
    // No such local image.
    let none = d.docker(&["push", &format!("{}/test/none:1", reg.addr)]).failure();
    assert!(none.stderr.contains("An image does not exist locally with the tag"), "{}", none.stderr);
}

/// berth's own CLI: login (stored as Docker stores it), push, pull, logout, and run's pull.
#[test]
fn berths_cli_logs_in_pushes_pulls_and_runs_what_it_pulled() {
    if !berth_tests::is_root() {
        return;
    }
    let Some(reg) = TestRegistry::start(RegistryOptions { auth: true, tls: false }) else { return };
    let Some(d) = TestDaemon::with_busybox() else { return };
    let config = tempfile::Builder::new().prefix("berth-docker-config-").tempdir().unwrap();
    let berth = |args: &[&str], stdin: Option<&str>| {
        use std::io::Write;
        let mut c = std::process::Command::new(berth_tests::bin("berth"));
        c.env("DOCKER_HOST", format!("unix://{}", d.socket().display())).env("DOCKER_CONFIG", config.path()).args(args);
        c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let name = format!("{}/cli/bb:2", reg.addr);
    d.berth(&["tag", "busybox", &name]).success();
    let (code, _, err) = berth(&["push", &name], None);
    assert_eq!(code, Some(1), "anonymous push to an authenticated registry: {err}");
    let (user, pass) = reg.creds.clone().unwrap();
    let (code, out, err) = berth(&["login", "-u", &user, "--password-stdin", &reg.addr], Some(&format!("{pass}\n")));
    assert_eq!((code, out.as_str()), (Some(0), "Login Succeeded\n"), "{err}");
    let stored = json(&std::fs::read_to_string(config.path().join("config.json")).unwrap());
    assert!(stored["auths"][&reg.addr]["auth"].is_string(), "{stored}");
    let (code, out, err) = berth(&["push", &name], None);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Pushed") && out.contains("2: digest: sha256:"), "{out}");
    // A second daemon: run pulls what is missing, with the stored credentials.
    let e = TestDaemon::start();
    let berth_e = |args: &[&str]| {
        let mut c = std::process::Command::new(berth_tests::bin("berth"));
        c.env("DOCKER_HOST", format!("unix://{}", e.socket().display())).env("DOCKER_CONFIG", config.path()).args(args);
        berth_tests::run_command(&mut c)
    };
    let never = berth_e(&["run", "--rm", "--pull", "never", &name, "true"]).failure();
    assert!(never.stderr.contains("No such image") && !never.stderr.contains("Unable to find image"), "{}", never.stderr);
    let run = berth_e(&["run", "--rm", &name, "echo", "from the registry"]).success();
    assert_eq!(run.stdout, "from the registry\n");
    assert!(run.stderr.contains("Unable to find image") && run.stderr.contains("Pull complete"), "{}", run.stderr);
    let pulled = berth_e(&["pull", &name]).success();
    assert!(
        pulled.stdout.contains(&format!("Status: Image is up to date for {name}")) && pulled.stdout.ends_with(&format!("{name}\n")),
        "{}",
        pulled.stdout
    );
    let quiet = berth_e(&["pull", "-q", &name]).success();
    assert_eq!(quiet.stdout, format!("{name}\n"));
    let (code, out, _) = berth(&["logout", &reg.addr], None);
    assert_eq!((code, out), (Some(0), format!("Removing login credentials for {}\n", reg.addr)));
    let stored = json(&std::fs::read_to_string(config.path().join("config.json")).unwrap());
    assert!(stored["auths"].get(&reg.addr).is_none(), "{stored}");
    let again = berth_e(&["pull", &format!("{}/cli/bb:nope", reg.addr)]).failure();
    assert!(again.stderr.contains("access denied") || again.stderr.contains("unauthorized"), "{}", again.stderr);
}

/// Docker Hub's references go to the configured mirror (here the test registry, so nothing
/// leaves the host); `info` lists it; a search of a registry without the v1 search API fails
/// with the registry's answer.
#[test]
fn hub_pulls_go_to_a_mirror_and_search_fails_cleanly() {
    if !berth_tests::is_root() || !docker_cli() {
        return;
    }
    let Some(reg) = TestRegistry::start(RegistryOptions::default()) else { return };
    reg.push_layout(three_layer_image(Compression::Gzip).dir.path(), "library/mirrored:latest");
    let mirror = format!("http://{}", reg.addr);
    let d = TestDaemon::start_with_config(&format!(r#"{{"registry-mirrors": ["{mirror}"]}}"#));
    let out = d.docker(&["pull", "mirrored"]).success().stdout;
    assert!(out.contains("Status: Downloaded newer image for mirrored:latest"), "{out}");
    assert_eq!(d.docker(&["run", "--rm", "mirrored"]).success().stdout, "second\n");
    let info = d.docker(&["info"]).success().stdout;
    assert!(info.contains("Registry Mirrors:") && info.contains(&format!("{mirror}/")), "{info}");
    let search = d.docker(&["search", &format!("{}/mirrored", reg.addr)]).failure();
    assert!(search.stderr.contains("/v1/search") && search.stderr.contains("404"), "{}", search.stderr);
}

/// The registry dies in the middle of a layer and comes back: the same pull resumes the
/// layer where it stopped and completes; nothing half-written is left.
#[test]
fn a_registry_killed_mid_pull_and_back_lets_the_pull_complete() {
    if !berth_tests::is_root() || !docker_cli() {
        return;
    }
    let Some(mut reg) = TestRegistry::start(RegistryOptions::default()) else { return };
    // A big layer of random data (it does not compress), so the kill lands inside it.
    let mut random = vec![0u8; 160 << 20];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut random)).unwrap();
    let mut layout = OciLayout::new();
    layout.image(&[busybox_layer(), tar_of(&[("random", &random)])], Compression::None, "amd64", &["true"]);
    layout.finish("big");
    drop(random);
    reg.push_layout(layout.dir.path(), "test/big:big");
    drop(layout);
    let d = TestDaemon::start();
    let name = format!("{}/test/big:big", reg.addr);
    let pull = {
        let (sock, name) = (d.socket(), name.clone());
        std::thread::spawn(move || {
            let mut c = std::process::Command::new("docker");
            c.env("DOCKER_HOST", format!("unix://{}", sock.display())).args(["pull", &name]);
            berth_tests::run_command(&mut c)
        })
    };
    // Some of the big layer is in an ingest: kill the registry there.
    let ingests = d.dir.path().join("data/image/content/ingest");
    let ingest_bytes = || -> u64 {
        walk(&ingests).iter().filter(|p| p.ends_with("data")).filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
    };
    berth_tests::wait_until("part of the big layer", || ingest_bytes() > 1 << 20 || pull.is_finished());
    assert!(!pull.is_finished(), "the pull ended before the registry could be killed");
    reg.kill();
    let partial = ingest_bytes();
    std::thread::sleep(std::time::Duration::from_millis(300));
    reg.restart();
    let out = pull.join().unwrap().success();
    assert!(out.stdout.contains("Retrying in"), "{}", out.stdout);
    assert!(partial < 160 << 20, "the kill landed after the layer was in ({partial} bytes)");
    assert!(walk(&ingests).iter().all(|p| !p.ends_with("data")), "an ingest was left");
    d.docker(&["run", "--rm", &name]).success();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// With `credsStore` in config.json, login stores through the helper (`docker-credential-X
/// store`), pulls read through it (`get`), logout erases; config.json keeps no password.
#[test]
fn credential_helpers_are_used_as_docker_uses_them() {
    if !berth_tests::is_root() {
        return;
    }
    let Some(reg) = TestRegistry::start(RegistryOptions { auth: true, tls: false }) else { return };
    let Some(d) = TestDaemon::with_busybox() else { return };
    let config = tempfile::Builder::new().prefix("berth-docker-config-").tempdir().unwrap();
    let helper_dir = config.path().join("bin");
    std::fs::create_dir(&helper_dir).unwrap();
    let store = config.path().join("helper-store.json");
    // A helper as Docker's protocol has it: the action as argument, the server (or a JSON
    // record) on stdin, the record on stdout; every call logged.
    let script = format!(
        "#!/bin/sh\nin=$(cat)\necho \"$1 $in\" >> {log}\ncase $1 in\n  store) printf %s \"$in\" > {store} ;;\n  get) if [ -f {store} ]; then cat {store}; else echo 'credentials not found in native keychain'; exit 1; fi ;;\n  erase) rm -f {store} ;;\nesac\n",
        log = config.path().join("helper.log").display(),
        store = store.display()
    );
    let helper = helper_dir.join("docker-credential-berthtest");
    std::fs::write(&helper, script).unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(config.path().join("config.json"), r#"{"credsStore": "berthtest"}"#).unwrap();
    let path = format!("{}:{}", helper_dir.display(), std::env::var("PATH").unwrap_or_default());
    let berth = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut c = std::process::Command::new(berth_tests::bin("berth"));
        c.env("DOCKER_HOST", format!("unix://{}", d.socket().display())).env("DOCKER_CONFIG", config.path()).env("PATH", &path).args(args);
        c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (user, pass) = reg.creds.clone().unwrap();
    let (code, out, err) = berth(&["login", "-u", &user, "--password-stdin", &reg.addr], &pass);
    assert_eq!((code, out.as_str()), (Some(0), "Login Succeeded\n"), "{err}");
    let kept = json(&std::fs::read_to_string(&store).unwrap());
    assert_eq!(
        (kept["ServerURL"].as_str(), kept["Username"].as_str(), kept["Secret"].as_str()),
        (Some(reg.addr.as_str()), Some(user.as_str()), Some(pass.as_str()))
    );
    let config_json = std::fs::read_to_string(config.path().join("config.json")).unwrap();
    assert!(!config_json.contains(&pass), "the password went into config.json: {config_json}");
    let name = format!("{}/helper/bb:1", reg.addr);
    d.berth(&["tag", "busybox", &name]).success();
    let (code, _, err) = berth(&["push", &name], "");
    assert_eq!(code, Some(0), "{err}");
    let log = std::fs::read_to_string(config.path().join("helper.log")).unwrap();
    assert!(log.contains(&format!("get {}", reg.addr)), "{log}");
    let (code, out, _) = berth(&["logout", &reg.addr], "");
    assert_eq!((code, out), (Some(0), format!("Removing login credentials for {}\n", reg.addr)));
    assert!(!store.exists(), "the helper erased nothing");
}
