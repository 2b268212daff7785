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
}
