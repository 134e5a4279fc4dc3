//! Two machines, made with network namespaces (`ip netns`, as root): a hub in one, a worker in
//! the other joined with nothing but the join string. The only traffic between them crosses a
//! veth pair, over TLS verified against the pinned mesh CA.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sheratan_testkit::Proc;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sheratan")
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by a veth pair, `10.213.N.1` and `10.213.N.2`; removed on drop.
struct TwoMachines {
    names: [String; 2],
    addrs: [String; 2],
}

impl TwoMachines {
    fn new() -> TwoMachines {
        let id = std::process::id();
        let names = [format!("sht-hub-{id}"), format!("sht-node-{id}")];
        let net = id % 250;
        let addrs = [format!("10.213.{net}.1"), format!("10.213.{net}.2")];
        let ends = [format!("shth{id}"), format!("shtn{id}")];
        let machines = TwoMachines { names, addrs };
        for name in &machines.names {
            ip(&["netns", "add", name]);
            ip(&["-n", name, "link", "set", "lo", "up"]);
        }
        ip(&[
            "link",
            "add",
            &ends[0],
            "netns",
            &machines.names[0],
            "type",
            "veth",
            "peer",
            "name",
            &ends[1],
            "netns",
            &machines.names[1],
        ]);
        for ((name, addr), end) in machines.names.iter().zip(&machines.addrs).zip(&ends) {
            let cidr = format!("{addr}/24");
            ip(&["-n", name, "addr", "add", &cidr, "dev", end]);
            ip(&["-n", name, "link", "set", end, "up"]);
        }
        machines
    }

    /// `sheratan args…` on machine `i`, waiting for its ready line.
    fn start(&self, i: usize, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut all = vec!["netns", "exec", &self.names[i], bin()];
        all.extend_from_slice(args);
        Proc::start(Path::new("ip"), &all, env, true)
    }

    /// `sheratan args…` on machine `i`, to its end.
    fn run(&self, i: usize, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.names[i], bin()])
            .args(args)
            .env_remove("SHERATAN_HUB_TOKEN")
            .env_remove("SHERATAN_CA_FILE")
            .env_remove("SHERATAN_HOME")
            .env("SHERATAN_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for TwoMachines {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

#[test]
fn a_worker_on_another_machine_joins_with_the_string_and_runs_jobs_over_tls() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    assert!(
        root,
        "this test makes network namespaces and needs root (the suite runs as root)"
    );
    let machines = TwoMachines::new();
    let dir = tempfile::tempdir().unwrap();
    let hub_home = dir.path().join("hub").display().to_string();
    let node_home = dir.path().join("node").display().to_string();
    // Both planes on every address: SHERATAN_TLS=auto makes both TLS.
    let _hub = machines.start(
        0,
        &[
            "hub",
            "--home",
            &hub_home,
            "--control-addr",
            "0.0.0.0:8787",
            "--data-addr",
            "0.0.0.0:8788",
        ],
        &[],
    );
    let (code, join, err) = machines.run(
        0,
        &[
            "join-string",
            "--home",
            &hub_home,
            "--host",
            &machines.addrs[0],
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let join = join.trim().to_owned();
    assert!(
        join.ends_with(&format!("@{}:8787,8788", machines.addrs[0])),
        "{join}"
    );

    // The other machine: nothing but the string.
    let _worker = machines.start(
        1,
        &["worker", "--node-id", "far-1", "--home", &node_home],
        &[("SHERATAN_JOIN", &join)],
    );
    // Plain HTTP across the network: the client refuses to send the token in clear, and the
    // hub would refuse it too.
    let (code, _, err) = machines.run(
        1,
        &[
            "nodes",
            "--home",
            &node_home,
            "--control-url",
            &format!("http://{}:8787", machines.addrs[0]),
            "--token",
            "whatever-it-is-not-sent-in-clear",
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("refusing to send the mesh token over plain HTTP"),
        "{err}"
    );
    let (code, _, err) = machines.run(
        1,
        &[
            "nodes",
            "--home",
            &node_home,
            "--control-url",
            &format!("http://{}:8787", machines.addrs[0]),
        ],
        &[
            ("SHERATAN_ALLOW_PLAIN_HTTP", "1"),
            ("SHERATAN_HUB_TOKEN", "x"),
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("this port speaks TLS"), "{err}");

    // A second far worker joins with a node credential of its own instead of the mesh token:
    // it runs as itself, and as no other node.
    let (code, node_join, err) = machines.run(
        0,
        &[
            "join-string",
            "--home",
            &hub_home,
            "--host",
            &machines.addrs[0],
            "--node",
            "far-2",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("a node credential's secret"), "{err}");
    let node_join = node_join.trim().to_owned();
    assert!(node_join.contains(":shtc_"), "{node_join}");
    let far2_home = dir.path().join("far2").display().to_string();
    let _far2 = machines.start(
        1,
        &[
            "worker",
            "--node-id",
            "far-2",
            "--queues",
            "far2",
            "--home",
            &far2_home,
        ],
        &[("SHERATAN_JOIN", &node_join)],
    );
    let (code, out, err) = machines.run(
        1,
        &[
            "submit",
            "--queue",
            "far2",
            "--kind",
            "echo",
            "--payload",
            "{\"n\":2}",
            "--wait",
            "--home",
            &node_home,
        ],
        &[("SHERATAN_JOIN", &join)],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"n\": 2"), "{out}");

    // A job submitted from the far machine runs on the far worker.
    let (code, out, err) = machines.run(
        1,
        &[
            "submit",
            "--kind",
            "echo",
            "--payload",
            "{\"from\":\"far\"}",
            "--wait",
            "--home",
            &node_home,
        ],
        &[("SHERATAN_JOIN", &join)],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"from\": \"far\""), "{out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, out, _) = machines.run(0, &["jobs", "list", "--json", "--home", &hub_home], &[]);
        let jobs: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        if jobs.to_string().contains("far-1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job never showed far-1: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
