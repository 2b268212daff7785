//! Dockerfile builds through berthd: the docker CLI's legacy builder (`DOCKER_BUILDKIT=0`),
//! berth's CLI and docker-py, checking the image's config, history, layers and files, the
//! cache's hits and misses, stages, ONBUILD, `.dockerignore`, and that bad input is refused
//! with nothing half-built left.

use std::path::Path;

use berth_tests::{Run, TestDaemon, json, run_command};
use serde_json::Value;

/// `docker build` (the legacy builder) in `dir` against `d`.
fn docker_build(d: &TestDaemon, dir: &Path, args: &[&str]) -> Run {
    let mut c = std::process::Command::new("docker");
    c.env("DOCKER_HOST", format!("unix://{}", d.socket().display())).env("DOCKER_BUILDKIT", "0").current_dir(dir).arg("build").args(args);
    run_command(&mut c)
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (name, data) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
}

fn inspect(d: &TestDaemon, name: &str) -> Value {
    json(&d.docker(&["image", "inspect", name]).success().stdout)[0].clone()
}

/// What a build may leave behind: containers, contexts, its own snapshots.
fn leftovers(d: &TestDaemon) -> Vec<String> {
    let mut out: Vec<String> = d.docker(&["ps", "-aq"]).success().stdout.lines().map(|l| format!("container {l}")).collect();
    let data = d.dir.path().join("data");
    for dir in [data.join("builder/contexts"), d.dir.path().join("exec/builder")] {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            out.push(e.path().display().to_string());
        }
    }
    for e in walk_snapshots(&data.join("image")) {
        out.push(format!("snapshot {e}"));
    }
    out
}

/// Snapshot keys of a build's own (COPY's writable layers and views), by name.
fn walk_snapshots(store: &Path) -> Vec<String> {
    let Ok(s) = std::fs::read_to_string(store.join("snapshots.json")) else { return Vec::new() };
    let v: Value = serde_json::from_str(&s).unwrap_or_default();
    let mut keys = Vec::new();
    if let Some(m) = v.get("snapshots").and_then(|m| m.as_object()) {
        keys.extend(m.keys().filter(|k| k.starts_with("build-")).cloned());
    }
    keys
}

const DOCKERFILE: &str = r#"# syntax=docker/dockerfile:1
ARG BASE=busybox
FROM ${BASE} AS base
ARG SECRET=s3cret
ENV APP=/app \
    GREETING="hello world"
WORKDIR $APP
COPY --chown=1234:5678 src/ ./src/
COPY --chmod=0750 tool.sh /usr/local/bin/
ADD layer.tar /opt/
RUN echo "$GREETING from $SECRET" > built.txt && echo ran-the-step
RUN <<EOF
echo heredoc > /heredoc.txt
EOF
COPY <<note.txt /app/
a note
note.txt
USER 1234
EXPOSE 8080 53/udp
VOLUME /data
LABEL org.example.v="1" other=two
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s CMD true
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat built.txt"]
"#;

/// A context with sources, an archive for ADD, and a `.dockerignore`.
fn context(dir: &Path) {
    write(
        dir,
        &[
            ("Dockerfile", DOCKERFILE),
            ("src/a.txt", "A"),
            ("src/sub/b.txt", "B"),
            ("src/secret.key", "never"),
            ("tool.sh", "#!/bin/sh\necho tool\n"),
            (".dockerignore", "**/*.key\n"),
        ],
    );
    let staging = dir.join("staging");
    write(&staging, &[("inner/x.txt", "from the tar")]);
    run_command(std::process::Command::new("tar").arg("-C").arg(&staging).arg("-cf").arg(dir.join("layer.tar")).arg("inner")).success();
    std::fs::remove_dir_all(&staging).unwrap();
}

#[test]
fn docker_cli_builds_an_image_as_dockers_legacy_builder_does() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let ctx = tempfile::tempdir().unwrap();
    context(ctx.path());
    let r = docker_build(&d, ctx.path(), &["-t", "app:1", "-t", "app:2", "--label", "built.by=test", "--build-arg", "SECRET=given", "."])
        .success();
    for want in
        ["Step 1/19 : FROM ", "ran-the-step", "Removing intermediate container", "Successfully tagged app:1", "Successfully tagged app:2"]
    {
        assert!(r.stdout.contains(want), "{want:?} in {}", r.stdout);
    }
    let img = inspect(&d, "app:1");
    assert_eq!(img["Id"], inspect(&d, "app:2")["Id"]);
    let c = &img["Config"];
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["User"], "1234");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(c["Cmd"], serde_json::json!(["cat built.txt"]));
    assert_eq!(c["StopSignal"], "SIGINT");
    assert_eq!(c["Healthcheck"]["Test"], serde_json::json!(["CMD-SHELL", "true"]));
    assert_eq!(c["Healthcheck"]["Interval"], 5_000_000_000i64);
    assert!(c["ExposedPorts"]["8080/tcp"].is_object() && c["ExposedPorts"]["53/udp"].is_object(), "{c}");
    assert!(c["Volumes"]["/data"].is_object(), "{c}");
    assert_eq!(
        (c["Labels"]["org.example.v"].as_str(), c["Labels"]["other"].as_str(), c["Labels"]["built.by"].as_str()),
        (Some("1"), Some("two"), Some("test"))
    );
    let env: Vec<&str> = c["Env"].as_array().unwrap().iter().filter_map(|e| e.as_str()).collect();
    assert!(env.contains(&"APP=/app") && env.contains(&"GREETING=hello world"), "{env:?}");
    assert!(!env.iter().any(|e| e.starts_with("SECRET")), "a build argument stays out of the image: {env:?}");
    // One layer per step that wrote files: WORKDIR, 2 COPY, ADD, 2 RUN, the heredoc COPY.
    let layers = img["RootFS"]["Layers"].as_array().unwrap().len();
    assert_eq!(layers, 1 + 7, "{img}");
    let h = d.docker(&["history", "--no-trunc", "--format", "{{.CreatedBy}}", "app:1"]).success().stdout;
    let lines: Vec<&str> = h.lines().collect();
    assert_eq!(lines.len(), 19, "a line for each instruction after FROM and the base's: {h}");
    assert_eq!(lines[0], "/bin/sh -c #(nop)  LABEL built.by=test");
    assert!(lines.contains(&"|1 SECRET=given /bin/sh -c echo \"$GREETING from $SECRET\" > built.txt && echo ran-the-step"), "{h}");
    assert!(lines.contains(&"/bin/sh -c #(nop)  ENV APP=/app GREETING=hello world"), "{h}");

    // The files, their owners and modes.
    let out = d
        .docker(&[
            "run",
            "--rm",
            "--user",
            "0",
            "--entrypoint",
            "sh",
            "app:1",
            "-c",
            "cat built.txt /heredoc.txt /app/note.txt /opt/inner/x.txt src/a.txt src/sub/b.txt; stat -c '%u:%g %n' src/a.txt src/sub; stat -c '%a %n' /usr/local/bin/tool.sh; ls src",
        ])
        .success()
        .stdout;
    for want in [
        "hello world from given",
        "heredoc",
        "a note",
        "from the tar",
        "AB",
        "1234:5678 src/a.txt",
        "1234:5678 src/sub",
        "750 /usr/local/bin/tool.sh",
    ] {
        assert!(out.contains(want), "{want:?} in {out}");
    }
    assert!(!out.contains("secret.key"), ".dockerignore keeps it out: {out}");
    assert_eq!(d.docker(&["run", "--rm", "app:1"]).success().stdout, "hello world from given\n");
    assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
}

#[test]
fn the_cache_follows_content_and_a_cached_rebuild_runs_nothing() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let ctx = tempfile::tempdir().unwrap();
    write(
        ctx.path(),
        &[("Dockerfile", "FROM busybox\nENV A=1\nWORKDIR /w\nCOPY f .\nRUN cat f > g && echo ran\nCMD [\"cat\", \"g\"]\n"), ("f", "one")],
    );
    let first = docker_build(&d, ctx.path(), &["-t", "c:1", "."]).success();
    let ran = |r: &Run| r.stdout.lines().any(|l| l == "ran");
    assert!(ran(&first), "{}", first.stdout);
    let id = inspect(&d, "c:1")["Id"].clone();
    let snapshots = || std::fs::read_dir(d.dir.path().join("data/image/snapshots")).map(|r| r.count()).unwrap_or(0);
    let before = snapshots();

    // The same context again: every step from the cache, the same image, nothing run or made.
    let again = docker_build(&d, ctx.path(), &["-t", "c:1", "."]).success();
    assert_eq!(again.stdout.matches("Using cache").count(), 5, "{}", again.stdout);
    assert!(!ran(&again) && !again.stdout.contains("Running in"), "{}", again.stdout);
    assert_eq!(inspect(&d, "c:1")["Id"], id, "a cached rebuild makes the same image");
    assert_eq!(snapshots(), before, "no layer written");

    // A touched file still hits.
    let f = ctx.path().join("f");
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
        .unwrap();
    let touched = docker_build(&d, ctx.path(), &["-t", "c:1", "."]).success();
    assert_eq!(touched.stdout.matches("Using cache").count(), 5, "{}", touched.stdout);

    // Changed content misses from its COPY on.
    std::fs::write(&f, "two").unwrap();
    let changed = docker_build(&d, ctx.path(), &["-t", "c:2", "."]).success();
    assert_eq!(changed.stdout.matches("Using cache").count(), 2, "ENV and WORKDIR only: {}", changed.stdout);
    assert_eq!(d.docker(&["run", "--rm", "c:2"]).success().stdout, "two");

    // --no-cache runs everything again.
    let fresh = docker_build(&d, ctx.path(), &["--no-cache", "-t", "c:3", "."]).success();
    assert!(!fresh.stdout.contains("Using cache") && ran(&fresh), "{}", fresh.stdout);

    // The cache is counted, and pruned.
    let df = d.docker(&["system", "df"]).success().stdout;
    assert!(df.lines().any(|l| l.starts_with("Build Cache") && l.split_whitespace().nth(2) != Some("0")), "{df}");
    d.docker(&["builder", "prune", "-af"]).success();
    let df = d.docker(&["system", "df"]).success().stdout;
    assert!(df.lines().any(|l| l.starts_with("Build Cache") && l.split_whitespace().nth(2) == Some("0")), "{df}");
    // --cache-from: an image's history and layers stand in for the steps they match.
    let from = docker_build(&d, ctx.path(), &["--cache-from", "c:2", "-t", "c:5", "."]).success();
    assert_eq!(from.stdout.matches("Using cache").count(), 5, "{}", from.stdout);
    assert_eq!(inspect(&d, "c:5")["Id"], inspect(&d, "c:2")["Id"], "the same image");
    d.docker(&["builder", "prune", "-af"]).success();
    let after = docker_build(&d, ctx.path(), &["-t", "c:4", "."]).success();
    assert!(!after.stdout.contains("Using cache"), "{}", after.stdout);
    assert_eq!(d.docker(&["run", "--rm", "c:4"]).success().stdout, "two", "pruning kept what images use");
    assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
}

#[test]
fn stages_targets_and_onbuild() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let ctx = tempfile::tempdir().unwrap();
    write(
        ctx.path(),
        &[(
            "Dockerfile",
            "FROM busybox AS build\nRUN mkdir /out && echo compiled > /out/bin\n\
             FROM busybox AS never\nRUN exit 7\n\
             FROM busybox\nCOPY --from=build /out/bin /app/bin\nCOPY --from=0 /out /copied/\nCMD [\"cat\", \"/app/bin\"]\n",
        )],
    );
    let r = docker_build(&d, ctx.path(), &["-t", "multi", "."]).success();
    assert!(!r.stdout.contains("exit 7"), "a stage the target does not need is not built: {}", r.stdout);
    assert_eq!(d.docker(&["run", "--rm", "multi"]).success().stdout, "compiled\n");
    assert_eq!(d.docker(&["run", "--rm", "multi", "cat", "/copied/bin"]).success().stdout, "compiled\n");
    docker_build(&d, ctx.path(), &["--target", "build", "-t", "only-build", "."]).success();
    assert_eq!(d.docker(&["run", "--rm", "only-build", "cat", "/out/bin"]).success().stdout, "compiled\n");
    let r = docker_build(&d, ctx.path(), &["--target", "nope", "."]).failure();
    assert!(r.stderr.contains("nope"), "{r:?}");

    // ONBUILD: stored in the base, run when a build starts from it.
    write(ctx.path(), &[("Dockerfile", "FROM busybox\nONBUILD RUN echo triggered > /onbuild.txt\n")]);
    docker_build(&d, ctx.path(), &["-t", "base-with-trigger", "."]).success();
    assert_eq!(inspect(&d, "base-with-trigger")["Config"]["OnBuild"], serde_json::json!(["RUN echo triggered > /onbuild.txt"]));
    write(ctx.path(), &[("Dockerfile", "FROM base-with-trigger\nCMD [\"cat\", \"/onbuild.txt\"]\n")]);
    docker_build(&d, ctx.path(), &["-t", "child", "."]).success();
    assert_eq!(d.docker(&["run", "--rm", "child"]).success().stdout, "triggered\n");
    assert!(inspect(&d, "child")["Config"]["OnBuild"].as_array().is_none_or(|a| a.is_empty()), "triggers are not inherited further");
    assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
}

#[test]
fn bad_input_is_refused_and_leaves_nothing() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let ctx = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), &[("secret", "host file")]);
    std::os::unix::fs::symlink(outside.path().join("secret"), ctx.path().join("link-out")).unwrap();
    let cases: &[(&str, &str)] = &[
        ("FROM busybox\nBOGUS x\n", "unknown instruction: BOGUS"),
        ("FROM busybox\nENV\n", "ENV requires at least one argument"),
        ("RUN true\n", "FROM"),
        ("FROM busybox\nCOPY ../secret /x\n", "outside the build context"),
        ("FROM busybox\nCOPY link-out /x\n", "file not found in build context"),
        ("FROM busybox\nCOPY --from=3 /x /x\n", "3"),
        ("FROM busybox\nCOPY a b c\n", "must be a directory and end with a /"),
    ];
    write(ctx.path(), &[("a", "a"), ("b", "b")]);
    for (df, want) in cases {
        write(ctx.path(), &[("Dockerfile", df)]);
        let r = docker_build(&d, ctx.path(), &["-t", "bad", "."]).failure();
        assert!(r.stderr.contains(want) || r.stdout.contains(want), "{df:?}: {want:?} in {r:?}");
    }
    // A failing RUN: its output and exit code, no image tagged, no container left.
    write(ctx.path(), &[("Dockerfile", "FROM busybox\nCOPY a /a\nRUN echo partial-output; exit 3\n")]);
    let r = docker_build(&d, ctx.path(), &["-t", "bad", "."]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stdout.contains("partial-output"), "{r:?}");
    assert!(r.stderr.contains("The command '/bin/sh -c echo partial-output; exit 3' returned a non-zero code: 3"), "{r:?}");
    assert!(d.docker(&["image", "inspect", "bad"]).code != 0, "no image tagged");
    assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
    assert!(d.docker(&["images", "-q", "--filter", "dangling=true"]).success().stdout.trim().is_empty(), "no dangling image");

    // A context bomb: refused as it streams in, nothing unpacked left.
    let mut b = tar::Builder::new(Vec::new());
    let deep = "d/".repeat(300) + "f";
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    b.append_data(&mut h, &deep, &b"x"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let (status, body) = d.request_body("POST", "/build", "application/x-tar", &tar);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("directory levels"), "{body}");
    // A .dockerignore that is a symlink to a host device: read inside the context (where
    // there is nothing), never followed out to an endless read.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(13);
    h.set_mode(0o644);
    b.append_data(&mut h, "Dockerfile", &b"FROM busybox\n"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, ".dockerignore", "/dev/zero").unwrap();
    let tar = b.into_inner().unwrap();
    let (status, body) = d.request_body("POST", "/build", "application/x-tar", &tar);
    assert!(status == 200 && body.contains("Successfully built"), "{status} {body}");
    let (status, body) = d.request_body("POST", "/build?dockerfile=nope", "application/x-tar", &[0u8; 1024]);
    assert_eq!((status, body.contains("Cannot locate specified Dockerfile: nope")), (500, true), "{body}");
    assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
}

#[test]
fn berth_cli_builds_from_a_directory_stdin_and_an_outside_dockerfile() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    let ctx = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    write(ctx.path(), &[("f", "data\n"), ("ignored.log", "x"), (".dockerignore", "*.log\n")]);
    write(elsewhere.path(), &[("Build.df", "FROM busybox\nCOPY . /ctx/\nRUN ls /ctx > /listing\nCMD [\"cat\", \"/listing\"]\n")]);
    let iid = elsewhere.path().join("iid");
    let df = elsewhere.path().join("Build.df");
    let r = d
        .berth(&["build", "-f", df.to_str().unwrap(), "-t", "cli", "--iidfile", iid.to_str().unwrap(), ctx.path().to_str().unwrap()])
        .success();
    assert!(r.stdout.contains("Successfully tagged cli:latest"), "{r:?}");
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), inspect(&d, "cli")["Id"].as_str().unwrap());
    let listing = d.docker(&["run", "--rm", "cli"]).success().stdout;
    assert!(listing.contains('f') && !listing.contains("ignored.log") && !listing.contains("Build.df"), "{listing}");

    // -q: the ID alone; a tar on stdin as the context.
    let q = d.berth(&["build", "-q", "-f", df.to_str().unwrap(), ctx.path().to_str().unwrap()]).success();
    assert_eq!(q.stdout.trim(), inspect(&d, "cli")["Id"].as_str().unwrap(), "a cached rebuild: the same image");
    write(ctx.path(), &[("Dockerfile", "FROM busybox\nCOPY f /f\n")]);
    let tar = ctx.path().parent().unwrap().join(format!("{}.tar", std::process::id()));
    run_command(std::process::Command::new("tar").arg("-C").arg(ctx.path()).arg("-cf").arg(&tar).arg(".")).success();
    let mut c = std::process::Command::new(berth_tests::bin("berth"));
    c.env("DOCKER_HOST", format!("unix://{}", d.socket().display()))
        .args(["build", "-t", "fromstdin", "-"])
        .stdin(std::fs::File::open(&tar).unwrap());
    let out = c.output().unwrap();
    std::fs::remove_file(&tar).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(d.docker(&["run", "--rm", "fromstdin", "cat", "/f"]).success().stdout, "data\n");
    // A failure's exit code is the step's.
    write(ctx.path(), &[("Dockerfile", "FROM busybox\nRUN exit 5\n")]);
    assert_eq!(d.berth(&["build", ctx.path().to_str().unwrap()]).code, 5);
    assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
}

#[test]
fn docker_py_builds() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    if std::process::Command::new("python3").args(["-c", "import docker"]).output().map(|o| !o.status.success()).unwrap_or(true) {
        berth_tests::skip("docker-py is not installed");
        return;
    }
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), &[("Dockerfile", "FROM busybox\nARG WHO\nRUN echo built-for-$WHO > /who\nCMD [\"cat\", \"/who\"]\n")]);
    let script = r#"
import docker, sys
c = docker.DockerClient(base_url=sys.argv[1])
img, logs = c.images.build(path=sys.argv[2], tag="py:1", buildargs={"WHO": "py"}, rm=True)
print("".join(l.get("stream", "") for l in logs))
print("tags", img.tags)
print(c.containers.run("py:1", remove=True).decode().strip())
try:
    c.images.build(path=sys.argv[2], dockerfile="missing")
except docker.errors.APIError as e:
    print("refused", e.status_code)
"#;
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-c", script, &format!("unix://{}", d.socket().display()), ctx.path().to_str().unwrap()]);
    let r = run_command(&mut cmd).success();
    assert!(r.stdout.contains("Successfully built"), "{r:?}");
    assert!(r.stdout.contains("tags ['py:1']"), "{r:?}");
    assert!(r.stdout.contains("built-for-py"), "{r:?}");
    assert!(r.stdout.contains("refused 500"), "{r:?}");
}

#[test]
fn berth_cli_sends_only_what_changed_and_berthd_keeps_the_rest() {
    use std::os::unix::fs::MetadataExt;
    let Some(mut d) = TestDaemon::with_busybox() else { return };
    let ctx = tempfile::tempdir().unwrap();
    write(
        ctx.path(),
        &[("Dockerfile", "FROM busybox\nCOPY . /ctx/\nCMD [\"sh\", \"-c\", \"ls /ctx; cat /ctx/a\"]\n"), ("a", "first"), ("b", "bee")],
    );
    std::fs::write(ctx.path().join("big"), vec![7u8; 1 << 20]).unwrap();
    let context = ctx.path().to_str().unwrap().to_string();
    let build = |d: &TestDaemon| d.berth(&["build", "-t", "kept", &context]).success().stdout;
    build(&d);
    let kept = std::fs::read_dir(d.dir.path().join("data/builder/sessions")).unwrap().next().unwrap().unwrap().path().join("ctx");
    let inode = |f: &str| std::fs::metadata(kept.join(f)).unwrap().ino();
    let (big, a) = (inode("big"), inode("a"));

    // Nothing changed: nothing sent again, everything from the cache.
    let again = build(&d);
    assert_eq!(again.matches("Using cache").count(), 2, "{again}");
    assert_eq!((inode("big"), inode("a")), (big, a), "kept files were not written again");

    // The same size, the old mtime: still seen as changed (its ctime and inode tell).
    let f = ctx.path().join("a");
    let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
    std::fs::write(&f, "FIRST").unwrap();
    std::fs::File::options().write(true).open(&f).unwrap().set_modified(mtime).unwrap();
    let changed = build(&d);
    assert!(!changed.contains("Using cache"), "{changed}");
    assert_eq!(inode("big"), big, "only what changed is sent");
    assert!(d.docker(&["run", "--rm", "kept"]).success().stdout.ends_with("FIRST"));

    // A file deleted in the context goes from the kept one too.
    std::fs::remove_file(ctx.path().join("b")).unwrap();
    build(&d);
    let listing = d.docker(&["run", "--rm", "kept"]).success().stdout;
    assert!(!listing.lines().any(|l| l == "b") && listing.lines().any(|l| l == "big"), "{listing}");
    assert!(!kept.join("b").exists());

    // What a crash mid-build would leave goes when berthd starts; kept contexts stay.
    let stray = [d.dir.path().join("data/builder/contexts/stray"), d.dir.path().join("exec/builder/build-stray")];
    d.stop();
    for s in &stray {
        std::fs::create_dir_all(s.join("sub")).unwrap();
    }
    d.launch();
    assert!(stray.iter().all(|s| !s.exists()), "leftovers removed at start");
    assert!(kept.join("big").exists(), "the kept context stays");
    let after = build(&d);
    assert_eq!(after.matches("Using cache").count(), 2, "{after}");

    // builder prune takes kept contexts too.
    d.docker(&["builder", "prune", "-af"]).success();
    assert_eq!(std::fs::read_dir(d.dir.path().join("data/builder/sessions")).unwrap().count(), 0);
    assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
}

#[test]
fn add_fetches_urls_and_run_steps_get_the_network_asked_for() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    // A web server on the loopback only.
    let site = tempfile::tempdir().unwrap();
    write(site.path(), &[("files/data.txt", "served\n")]);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = std::process::Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string(), "--directory"])
        .arg(site.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    berth_tests::wait_until("the web server", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let ctx = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}/files/data.txt");
    write(
        ctx.path(),
        &[(
            "Dockerfile",
            &format!(
                "FROM busybox\nADD {url} /fetched/\nADD {url} /renamed.txt\n\
                 RUN --network=none cat /proc/net/dev > /none-dev\nRUN cat /proc/net/dev > /bridge-dev\n"
            ),
        )],
    );
    let first = docker_build(&d, ctx.path(), &["-t", "fetched", "."]);
    let again = docker_build(&d, ctx.path(), &["-t", "fetched", "."]);
    write(site.path(), &[("files/data.txt", "changed\n")]);
    let changed = docker_build(&d, ctx.path(), &["-t", "fetched2", "."]);
    let _ = server.kill();
    let _ = server.wait();
    first.success();
    let out =
        d.docker(&["run", "--rm", "fetched", "sh", "-c", "cat /fetched/data.txt /renamed.txt; stat -c %a /renamed.txt"]).success().stdout;
    assert_eq!(out, "served\nserved\n600\n");
    assert_eq!(again.success().stdout.matches("Using cache").count(), 4, "the same content: cached");
    assert!(changed.success().stdout.matches("Using cache").count() == 0, "new content misses");
    // --network=none: the loopback alone; the default: the bridge's interface too.
    let none = d.docker(&["run", "--rm", "fetched", "cat", "/none-dev"]).success().stdout;
    let bridge = d.docker(&["run", "--rm", "fetched", "cat", "/bridge-dev"]).success().stdout;
    assert!(none.contains("lo:") && !none.contains("eth0"), "{none}");
    assert!(bridge.contains("eth0"), "{bridge}");
    assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
}

/// The same Dockerfile built by berthd and by the peer dockerd's legacy builder: the same
/// config, the same history (COPY's content digests aside: Docker's are its own), the same
/// files with the same owners and modes.
#[test]
fn a_build_matches_dockers_legacy_builder() {
    let Some(peer) = berth_tests::peer_dockerd() else { return };
    let Some(d) = TestDaemon::with_busybox() else { return };
    let image = format!("berth-build-cmp-{}", std::process::id());
    let on_peer = |dir: &Path, args: &[&str]| {
        let mut c = std::process::Command::new("docker");
        c.env("DOCKER_HOST", &peer).env("DOCKER_BUILDKIT", "0").current_dir(dir).args(args);
        run_command(&mut c)
    };
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs.tar");
    run_command(std::process::Command::new("tar").arg("-C").arg(berth_tests::busybox_rootfs()).arg("-cf").arg(&rootfs).arg(".")).success();
    on_peer(dir.path(), &["import", rootfs.to_str().unwrap(), &format!("{image}-base")]).success();
    d.docker(&["tag", "busybox", &format!("{image}-base")]).success();
    let ctx = dir.path().join("ctx");
    // What Docker 20.10's legacy builder knows (no heredocs, no --chmod).
    let dockerfile = format!(
        "ARG BASE={image}-base\nFROM $BASE AS base\nARG V=1\nENV A=$V B=\"x y\"\nLABEL one=1 \"two words\"=v\nWORKDIR /w\n\
         COPY src/ /dst/\nCOPY src/a rel\nCOPY --chown=7:8 src/sub/ /owned/\nRUN echo $V > /ran && mkdir -p /made && chmod 750 /made\n\
         FROM base\nCOPY --from=base /ran /copied\nUSER 1000:1000\nEXPOSE 80 53/udp\nVOLUME [\"/data\"]\nSTOPSIGNAL SIGTERM\n\
         HEALTHCHECK --interval=3s --retries=2 CMD [\"true\"]\nSHELL [\"/bin/sh\", \"-ec\"]\nENTRYPOINT echo hi\nCMD [\"x\"]\nONBUILD RUN true\n"
    );
    write(&ctx, &[("Dockerfile", &dockerfile), ("src/a", "a\n"), ("src/sub/b", "b\n")]);
    on_peer(&ctx, &["build", "-q", "-t", &image, "--build-arg", "V=2", "--label", "l=v", "."]).success();
    docker_build(&d, &ctx, &["-q", "-t", &image, "--build-arg", "V=2", "--label", "l=v", "."]).success();
    let config = |r: Run| json(&r.success().stdout)[0]["Config"].clone();
    let mut theirs = config(on_peer(&ctx, &["image", "inspect", &image]));
    let mut ours = config(d.docker(&["image", "inspect", &image]));
    // Docker 20.10's legacy builder leaves the last step's container config's Image; berth none.
    for c in [&mut theirs, &mut ours] {
        for k in ["Image", "Hostname", "Domainname", "AttachStdin", "AttachStdout", "AttachStderr", "Tty", "OpenStdin", "StdinOnce"] {
            c.as_object_mut().unwrap().remove(k);
        }
    }
    assert_eq!(ours, theirs);
    let history = |r: Run| -> Vec<String> {
        r.success()
            .stdout
            .lines()
            .map(|l| {
                // `file:<digest>`: the digest is each engine's own.
                let mut out = l.to_string();
                for kind in ["file:", "dir:", "multi:"] {
                    if let Some(i) = out.find(kind) {
                        let start = i + kind.len();
                        let end = out[start..].find(' ').map_or(out.len(), |e| start + e);
                        out.replace_range(start..end, "…");
                    }
                }
                out
            })
            .collect()
    };
    let fmt = ["history", "--no-trunc", "--format", "{{.CreatedBy}}|{{.Size}}", image.as_str()];
    assert_eq!(history(d.docker(&fmt)), history(on_peer(&ctx, &fmt)));
    let look = [
        "run",
        "--rm",
        "--user",
        "0",
        "--entrypoint",
        "sh",
        image.as_str(),
        "-c",
        "ls -lnR /dst /w /owned /made /copied | grep -v total | sed 's/ [A-Z][a-z][a-z] [ 0-9][0-9] [0-9:]*//'; cat /ran /copied",
    ];
    assert_eq!(d.docker(&look).success().stdout, on_peer(&ctx, &look).success().stdout);
    for i in [image.clone(), format!("{image}-base")] {
        let _ = on_peer(&ctx, &["rmi", "-f", &i]);
    }
    assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
}

/// Debian's docker-compose (1.29, docker-py's build underneath) builds a service's image.
#[test]
fn docker_compose_builds_a_service() {
    let Some(d) = TestDaemon::with_busybox() else { return };
    if !berth_tests::have("docker-compose") {
        berth_tests::skip("docker-compose is not installed");
        return;
    }
    let dir = tempfile::Builder::new().prefix("berth-compose-build-").tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("Dockerfile", "FROM busybox\nARG MSG=default\nRUN echo $MSG > /msg\nCMD [\"cat\", \"/msg\"]\n"),
            (
                "docker-compose.yml",
                "version: \"3\"\nservices:\n  app:\n    build:\n      context: .\n      args:\n        MSG: from-compose\n    image: composed:1\n    network_mode: none\n",
            ),
        ],
    );
    let compose = |args: &[&str]| {
        let mut c = std::process::Command::new("docker-compose");
        c.current_dir(dir.path()).env("DOCKER_HOST", format!("unix://{}", d.socket().display())).args(["-p", "built"]).args(args);
        run_command(&mut c)
    };
    let built = compose(&["build"]).success();
    assert!(
        built.stdout.contains("Successfully tagged composed:1") || built.stderr.contains("Successfully tagged composed:1"),
        "{built:?}"
    );
    assert_eq!(compose(&["run", "--rm", "app"]).success().stdout.trim(), "from-compose");
    compose(&["down"]).success();
    assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
}
