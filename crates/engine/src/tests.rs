//! The engine's lifecycle through the fake tasks: create, start, exits, kills, pauses,
//! auto-remove, failed starts and restore after berthd goes away — without root (the image's
//! files belong to whoever runs the tests, and the snapshotter is vfs).

use std::sync::Arc;
use std::time::Duration;

use berth_api::Kind;
use berth_api::containers::{Containers, CreateBody};
use berth_shim::ErrorKind;
use berth_store::Reference;
use berth_store::images::Driver;
use serde_json::{Value, json};

use crate::task::fake::Fake;
use crate::{Config, Engine};

struct Env {
    dir: tempfile::TempDir,
    fake: Arc<Fake>,
    links: Arc<crate::networks::fake::Links>,
}

impl Env {
    fn new() -> Env {
        Env { dir: tempfile::tempdir().unwrap(), fake: Arc::new(Fake::default()), links: Default::default() }
    }

    fn config(&self) -> Config {
        Config {
            data_root: self.dir.path().join("data"),
            exec_root: self.dir.path().join("exec"),
            shim: "/nonexistent/berth-shim".into(),
            init_path: None,
            init: false,
            log_driver: "json-file".into(),
            log_opts: Default::default(),
            log_default_max_size: 0,
            log_default_max_file: 1,
            cgroup_parent: "berth-unit-test".into(),
            registry: Default::default(),
            network: Default::default(),
        }
    }

    /// An engine over this environment's roots (a second one plays berthd started again).
    async fn engine(&self) -> Engine {
        Engine::open_with(
            self.config(),
            Arc::clone(&self.fake) as Arc<dyn crate::task::Tasks>,
            Driver::Vfs,
            Arc::clone(&self.links) as Arc<dyn berth_network::plumbing::Plumbing>,
        )
        .await
        .unwrap()
    }
}

/// A one-file image owned by whoever runs the test, so applying it needs no chown to root.
fn import_image(e: &Engine) {
    let (uid, gid) = (nix::unistd::geteuid().as_raw() as u64, nix::unistd::getegid().as_raw() as u64);
    let mut b = tar::Builder::new(Vec::new());
    for (path, mode, data) in [("bin/true", 0o755, &b"#!fake"[..]), ("etc/passwd", 0o644, &b"root:x:0:0:root:/root:/bin/sh\n"[..])] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(1_600_000_000);
        b.append_data(&mut h, path, data).unwrap();
    }
    let tar = b.into_inner().unwrap();
    e.images.import(&tar[..], Some(&Reference::parse("img").unwrap()), "", Default::default()).unwrap();
}

async fn create(e: &Engine, name: &str, body: Value) -> String {
    let mut body = body;
    body["Image"] = json!("img");
    body["Cmd"] = json!(["/bin/true"]);
    let body: CreateBody = serde_json::from_value(body).unwrap();
    let v = e.create(Some(name.to_string()), body).await.unwrap();
    v.id
}

async fn state(e: &Engine, id: &str) -> Value {
    serde_json::to_value(e.inspect(id, false).await.unwrap().state).unwrap()
}

/// Until `f` holds (the engine records exits from its own tasks).
async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..500 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_runs_exits_and_its_bundle_goes() {
    let env = Env::new();
    let e = env.engine().await;
    import_image(&e);
    let id = create(&e, "one", json!({})).await;
    assert_eq!(state(&e, &id).await["Status"], "created");
    assert!(e.start("one").await.unwrap());
    assert!(env.fake.is_running(&id));
    let s = state(&e, &id).await;
    assert_eq!((s["Status"].clone(), s["Running"].clone()), (json!("running"), json!(true)));
    assert!(!e.start("one").await.unwrap(), "a second start is a 304");
    assert_eq!(e.top("one", None).await.unwrap().processes.len(), 0, "the fake's pids are no host process's");
    env.fake.exit(&id, 3);
    until("the exit", async || state(&e, &id).await["Status"] == "exited").await;
    let s = state(&e, &id).await;
    assert_eq!((s["ExitCode"].clone(), s["Pid"].clone()), (json!(3), json!(0)));
    until("the bundle's removal", async || !env.dir.path().join("exec/containers").join(&id).exists()).await;
    assert_eq!(env.fake.mounted(), 0, "its rootfs was unmounted");
    e.remove("one", false, false).await.unwrap();
    assert_eq!(e.inspect("one", false).await.unwrap_err().kind, Kind::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_stop_pause_and_auto_remove() {
    let env = Env::new();
    let e = env.engine().await;
    import_image(&e);
    let id = create(&e, "kk", json!({})).await;
    e.start(&id).await.unwrap();
    e.pause("kk").await.unwrap();
    assert!(env.fake.is_frozen(&id));
    assert_eq!(state(&e, &id).await["Status"], "paused");
    e.unpause("kk").await.unwrap();
    assert!(!env.fake.is_frozen(&id));
    e.kill("kk", Some("KILL".into())).await.unwrap();
    until("the kill", async || state(&e, &id).await["Status"] == "exited").await;
    assert_eq!(state(&e, &id).await["ExitCode"], 137);
    assert_eq!(e.kill("kk", None).await.unwrap_err().kind, Kind::Conflict, "not running");

    let id = create(&e, "rm", json!({"HostConfig": {"AutoRemove": true}})).await;
    e.start("rm").await.unwrap();
    assert!(e.stop("rm", None, Some(1)).await.unwrap());
    assert!(env.fake.signals().contains(&(id.clone(), libc::SIGTERM)));
    until("the auto-removal", async || e.inspect(&id, false).await.is_err()).await;
    assert!(!env.dir.path().join("data/containers").join(&id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_cannot_run_its_program_gets_dockers_exit_codes() {
    let env = Env::new();
    let e = env.engine().await;
    import_image(&e);
    let id = create(&e, "bad", json!({})).await;
    env.fake.fail_next_create(ErrorKind::ExecNotFound, "exec: \"/bin/true\": executable file not found in $PATH");
    let err = e.start("bad").await.unwrap_err();
    assert_eq!(err.kind, Kind::InvalidArgument);
    assert!(err.message.starts_with("failed to create task for container: exec:"), "{}", err.message);
    let s = state(&e, &id).await;
    assert_eq!((s["Status"].clone(), s["ExitCode"].clone()), (json!("created"), json!(127)));
    // The words do not decide: the runtime's kind does.
    env.fake.fail_next_create(ErrorKind::ExecPermission, "exec: \"/bin/true\": no such file or directory");
    e.start("bad").await.unwrap_err();
    assert_eq!(state(&e, &id).await["ExitCode"], 126);
    env.fake.fail_next_create(ErrorKind::Internal, "something else");
    e.start("bad").await.unwrap_err();
    assert_eq!(state(&e, &id).await["ExitCode"], 128);
    assert!(env.fake.destroyed().contains(&id), "what a failed start leaves is taken down");
    // It starts once the program can run.
    e.start("bad").await.unwrap();
    assert_eq!(state(&e, &id).await["Status"], "running");

    let id = create(&e, "bad-rm", json!({"HostConfig": {"AutoRemove": true}})).await;
    env.fake.fail_next_create(ErrorKind::ExecNotFound, "not found");
    e.start("bad-rm").await.unwrap_err();
    assert!(e.inspect(&id, false).await.is_err(), "an auto-remove container that cannot start is removed, as in Docker");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn restore_adopts_running_containers_and_records_what_happened_meanwhile() {
    let env = Env::new();
    // berthd's first life, in a runtime of its own: dropping it ends every task berthd had
    // running, as a crash does.
    let (adopted, exited, vanished, cut_short, auto) = runtime().block_on(async {
        let e = env.engine().await;
        import_image(&e);
        let ids = (
            create(&e, "adopted", json!({})).await,
            create(&e, "exited", json!({})).await,
            create(&e, "vanished", json!({})).await,
            create(&e, "cut-short", json!({})).await,
            create(&e, "auto", json!({"HostConfig": {"AutoRemove": true}})).await,
        );
        for id in [&ids.0, &ids.1, &ids.2, &ids.4] {
            e.start(id).await.unwrap();
        }
        ids
    });
    // Meanwhile: one exits (its shim records it), one's shim is killed, an auto-remove one
    // exits, and a start that the crash cut short left a shim for a container whose record says
    // created.
    env.fake.exit(&exited, 7);
    env.fake.kill_shim(&vanished);
    env.fake.exit(&auto, 0);
    env.fake.stray_shim(&cut_short);
    runtime().block_on(async {
        let e = env.engine().await;
        assert_eq!(state(&e, &adopted).await["Status"], "running", "its shim lives: adopted");
        let s = state(&e, &exited).await;
        assert_eq!((s["Status"].clone(), s["ExitCode"].clone()), (json!("exited"), json!(7)));
        let s = state(&e, &vanished).await;
        assert_eq!((s["Status"].clone(), s["ExitCode"].clone()), (json!("exited"), json!(255)));
        assert!(s["Error"].as_str().unwrap().contains("without recording an exit status"), "{s}");
        assert_eq!(state(&e, &cut_short).await["Status"], "created");
        assert!(env.fake.destroyed().contains(&cut_short), "the cut-short start is taken down");
        until("the auto-removal", async || e.inspect(&auto, false).await.is_err()).await;
        // The adopted container's exit reaches the new engine.
        env.fake.exit(&adopted, 0);
        until("the adopted container's exit", async || state(&e, &adopted).await["Status"] == "exited").await;
    });
}

/// A start plumbs the container's endpoints through the seam (its address, its link, its ports)
/// and its exit gives all of it back; a start that fails on its ports leaves no link, address or
/// port behind, and one asking for a network that does not exist is refused at create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_made_at_start_and_given_back() {
    let env = Env::new();
    let e = env.engine().await;
    import_image(&e);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let binding = json!({"PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": port.to_string()}]}});
    let id = create(&e, "web", json!({"HostConfig": binding})).await;
    e.start("web").await.unwrap();
    let ns = e.inspect("web", false).await.unwrap().network_settings;
    let ep = &ns.networks["bridge"];
    assert!(!ep.ip_address.is_empty() && ep.ip_address == ns.ip_address, "{ns:?}");
    assert_eq!(ns.ports["80/tcp"].as_ref().unwrap()[0].host_port, port.to_string());
    {
        let links = env.links.links.lock().unwrap();
        assert_eq!(links.len(), 1);
        assert_eq!((links[0].ifname.as_str(), links[0].addr.to_string()), ("eth0", ep.ip_address.clone()));
        assert_eq!(links[0].host_if, berth_network::plumbing::host_if_name(&ep.endpoint_id));
        assert!(links[0].gateway.is_some(), "the default route");
    }
    assert!(env.links.rules.lock().unwrap().last().unwrap().contains(&format!("dport {port} dnat to {}:80", ep.ip_address)));

    // A second container publishing the same port: refused, nothing of it left.
    let clash = create(&e, "clash", json!({"HostConfig": binding})).await;
    let err = e.start("clash").await.unwrap_err();
    assert!(err.message.contains("port is already allocated"), "{}", err.message);
    assert_eq!(state(&e, &clash).await["Status"], "created");
    until("the failed start's link to go", async || env.links.links.lock().unwrap().len() == 1).await;
    let held = e.nets.ipam.network("bridge").unwrap().allocated;
    assert_eq!(held.values().collect::<Vec<_>>(), vec![&id], "only the first container holds an address");

    // The exit gives back the address, the rule and (off the exit's path) the link.
    env.fake.exit(&id, 0);
    until("the exit", async || state(&e, &id).await["Status"] == "exited").await;
    assert!(e.nets.ipam.network("bridge").unwrap().allocated.is_empty());
    let rules = env.links.rules.lock().unwrap().clone();
    assert!(!rules.last().unwrap().contains("dnat to"), "{rules:#?}");
    until("the link to go", async || env.links.links.lock().unwrap().is_empty()).await;
    let ns = e.inspect("web", false).await.unwrap().network_settings;
    assert!(ns.networks["bridge"].ip_address.is_empty() && ns.ports.is_empty(), "{ns:?}");

    // An unknown network: a 400 at create (a 404 would make the docker CLI pull the image).
    let body: CreateBody =
        serde_json::from_value(json!({"Image": "img", "Cmd": ["/bin/true"], "HostConfig": {"NetworkMode": "nope"}})).unwrap();
    let err = e.create(None, body).await.unwrap_err();
    assert_eq!((err.kind, err.message.as_str()), (Kind::InvalidArgument, "network nope not found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_writes_a_running_containers_limits_and_persists_them() {
    let env = Env::new();
    let e = env.engine().await;
    import_image(&e);
    let id = create(&e, "up", json!({"HostConfig": {"Memory": 64 << 20, "MemorySwap": 128 << 20}})).await;
    let asked = |v: Value| serde_json::from_value::<berth_api::containers::HostConfig>(v).unwrap();
    // Stopped: the record only.
    e.update("up", asked(json!({"CpuShares": 256}))).await.unwrap();
    assert!(env.fake.updates().is_empty());
    e.start("up").await.unwrap();
    e.update("up", asked(json!({"Memory": 100 << 20, "PidsLimit": 9, "RestartPolicy": {"Name": "always"}}))).await.unwrap();
    let written = env.fake.updates();
    assert_eq!(written.len(), 1);
    let r = serde_json::to_value(&written[0].1).unwrap();
    assert_eq!(
        (written[0].0.as_str(), &r["memory"]["limit"], &r["pids"]["limit"], &r["cpu"]["shares"]),
        (id.as_str(), &json!(100 << 20), &json!(9), &json!(256))
    );
    // A refused update changes nothing.
    let err = e.update("up", asked(json!({"Memory": 300 << 20}))).await.unwrap_err();
    assert_eq!(err.kind, Kind::Conflict);
    assert_eq!(env.fake.updates().len(), 1);
    // berthd started again reads what the update made.
    drop(e);
    let e = env.engine().await;
    let hc = serde_json::to_value(e.inspect("up", false).await.unwrap().host_config).unwrap();
    assert_eq!(
        (hc["Memory"].clone(), hc["CpuShares"].clone(), hc["RestartPolicy"]["Name"].clone()),
        (json!(100 << 20), json!(256), json!("always"))
    );
}
