//! The README's tour, run as written. Every `sh` block between `<!-- tour:start` and
//! `<!-- tour:end -->` runs in order, in one bash, in a directory where `sheratan up` runs on
//! the default ports the README names. The whole run happens in a network namespace of its own
//! (`unshare -n`, as root), so those ports are free whatever else the suite runs. `sheratan` is
//! the binary under test, on `PATH` (as `cargo install` would put it).
//!
//! Each command must exit 0 unless listed below, and what a listed command prints must contain
//! what the README says it does. A command removed from the README fails the test through its
//! expectation, so README and product cannot drift apart.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A piece of a tour command (unique among them), its exit code, and pieces of what it prints.
const EXPECTED: &[(&str, i32, &[&str])] = &[
    (
        r#"submit --kind echo --payload '{"hello":"world"}' --wait"#,
        0,
        &[r#""hello": "world""#],
    ),
    (
        r#"submit --kind sleep --payload '{"ms":2000}' --wait"#,
        0,
        &[r#""slept_ms": 2000"#],
    ),
    (
        "sheratan nodes  ",
        0,
        &["worker-1", "host-a", "relay", "ONLINE"],
    ),
    ("sheratan jobs list", 0, &["JOB", "completed"]),
    (
        "--key-concurrency 1 --rate 50/s",
        0,
        &["key_concurrency  1", "rate             50/s"],
    ),
    ("--concurrency-key acct-7", 0, &[r#""n": 2"#]),
    (
        "sheratan queue list",
        0,
        &["default", "key_concurrency=1 rate=50/s"],
    ),
    (
        "--key-concurrency none --rate none",
        0,
        &["key_concurrency  none", "rate             none"],
    ),
    ("sheratan jobs show ${JOB: -8}", 0, &[r#"{"n":1}"#]),
    ("--in 10m", 0, &["submitted, delayed until"]),
    ("--kind upper", 0, &[r#""TEXT": "HI""#]),
    ("kill $W && wait $W", 0, &[]),
    ("sheratan nodes rm worker-2", 0, &["removed worker-2"]),
    ("$C/health", 0, &[r#""status":"ok""#]),
    ("$C/v1/heartbeat", 0, &[r#""node_id":"w1""#]),
    ("$C/v1/nodes/w1", 0, &[r#""status":"ONLINE""#]),
    ("$C/metrics?format=json", 0, &["nodes"]),
    (
        "$D/admin/bundles/tool.sh",
        0,
        &[r#""name":"tool.sh""#, r#""sha256""#],
    ),
    ("sh /tmp/tool.sh", 0, &["tool.sh from the hub: Linux"]),
    (
        r#""queue":"tour""#,
        0,
        &[
            r#""status":"accepted""#,
            r#"no node has asked queue \"tour\""#,
        ],
    ),
    (
        "a lease id only w1 ever sees",
        0,
        &[r#""lease_id":""#, r#""queue":"tour""#],
    ),
    (
        "$D/v1/results ",
        0,
        &[r#""status":"completed""#, r#""duplicate":false"#],
    ),
    ("pending=1", 0, &[r#""ok":true"#]),
    ("$D/v1/results/ack", 0, &[r#""acked":1"#]),
    (
        "grep '^sheratan_results_pending'",
        0,
        &["sheratan_results_pending 0"],
    ),
    ("sheratan nodes rm w1", 0, &["removed w1"]),
    (
        "sheratan schedule list",
        0,
        &["nightly", "30 2 * * * Europe/Berlin"],
    ),
    (
        "sheratan schedule rm nightly",
        0,
        &["schedule nightly deleted"],
    ),
    (r#""dispatch":"auction""#, 0, &[r#""queue":"auction""#]),
    ("$A/auctions", 0, &[r#""winner":"host-"#]),
    ("$A/overview", 0, &[r#""components""#]),
    ("$A/events", 28, &["event: ready"]),
    (
        "--queue llm --kind chat",
        0,
        &[
            r#"you wrote 3 words: \"hello demo page\""#,
            r#""demo": true"#,
        ],
    ),
    ("3000/v1/complete", 0, &[r#"you wrote 1 word: \"Hi\""#]),
    ("3000/health", 0, &["cdp"]),
    ("sheratan smoke", 0, &[]),
    (
        "sheratan diagnose",
        0,
        &[".sheratan/diagnostics/diag_bundle_", "secrets redacted"],
    ),
];

/// The `sh` commands of the tour, in order (a line ending in `\` continues on the next).
fn tour_commands(readme: &str) -> Vec<String> {
    let start = readme
        .find("<!-- tour:start")
        .expect("README has <!-- tour:start");
    let end = readme
        .find("<!-- tour:end -->")
        .expect("README has <!-- tour:end -->");
    let mut commands = Vec::new();
    let mut in_sh = false;
    let mut command = String::new();
    for line in readme[start..end].lines() {
        let fence = line.trim_start().starts_with("```");
        if !in_sh {
            in_sh = fence && line.trim() == "```sh";
            continue;
        }
        if fence {
            in_sh = false;
            continue;
        }
        command.push_str(line);
        if line.ends_with('\\') {
            command.push('\n');
        } else if !command.trim().is_empty() {
            commands.push(std::mem::take(&mut command));
        }
    }
    commands
}

/// A bash script that starts `sheratan up`, runs each command between markers, and stops it.
fn script(commands: &[String]) -> String {
    let mut s = String::from(
        "set -u\nip link set lo up\n\
         # Not a job of this shell: the tour's background jobs are its own.\n\
         ( sheratan up > up.log 2>&1 & echo $! > up.pid )\n\
         for _ in $(seq 1 600); do grep -q '^ready:' up.log && break; sleep 0.2; done\n\
         grep -q '^ready:' up.log || { echo '@@@ up never became ready'; exit 1; }\n",
    );
    for (i, command) in commands.iter().enumerate() {
        s.push_str(&format!(
            "printf '\\n@@@ CMD {i}\\n'\n{{ {command}\n}} 2>&1\nprintf '\\n@@@ EXIT {i} %d\\n' $?\n"
        ));
    }
    s.push_str("kill $(jobs -p) 2>/dev/null\nkill -TERM $(cat up.pid)\nwhile kill -0 $(cat up.pid) 2>/dev/null; do sleep 0.1; done\n");
    s
}

/// What each command printed and its exit code, from the script's output.
fn transcript(output: &str, count: usize) -> Vec<(String, i32)> {
    (0..count)
        .map(|i| {
            let start = format!("\n@@@ CMD {i}\n");
            let end = format!("\n@@@ EXIT {i} ");
            let Some(a) = output.find(&start) else {
                return (String::new(), -1);
            };
            let from = a + start.len();
            let Some(b) = output[from..].find(&end) else {
                return (output[from..].to_owned(), -1);
            };
            let code = output[from + b + end.len()..]
                .lines()
                .next()
                .and_then(|c| c.trim().parse().ok())
                .unwrap_or(-1);
            (output[from..from + b].to_owned(), code)
        })
        .collect()
}

#[test]
fn the_readme_tour_runs_verbatim_and_says_what_it_shows() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let commands = tour_commands(&readme);
    assert!(
        commands.len() > 20,
        "the tour has {} commands",
        commands.len()
    );

    let dir = tempfile::Builder::new()
        .prefix("sheratan-tour-")
        .tempdir()
        .unwrap();
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_sheratan"), bin_dir.join("sheratan")).unwrap();
    let work = dir.path().join("clone");
    std::fs::create_dir_all(work.join("examples")).unwrap();
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), work.join("examples").join(entry.file_name())).unwrap();
    }
    std::fs::write(dir.path().join("tour.sh"), script(&commands)).unwrap();

    // As root a network namespace is `unshare -n`; otherwise a user namespace maps us to root.
    let root_user = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let mut cmd = Command::new("unshare");
    cmd.arg(if root_user { "-n" } else { "-rn" })
        .arg("bash")
        .arg(dir.path().join("tour.sh"))
        .current_dir(&work)
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
    for (key, _) in std::env::vars() {
        if key.starts_with("SHERATAN_") {
            cmd.env_remove(key);
        }
    }
    let output = run_with_deadline(cmd, Duration::from_secs(240));
    assert!(
        output.contains("\n@@@ CMD 0\n"),
        "the tour never started (it needs `unshare -n` as root or `unshare -rn` with user \
         namespaces, `ip` and `bash`):\n{output}"
    );
    let up_log = std::fs::read_to_string(work.join("up.log")).unwrap_or_default();
    let results = transcript(&output, commands.len());
    let report = || {
        let mut r = String::new();
        for (command, (out, code)) in commands.iter().zip(&results) {
            r.push_str(&format!("$ {command}\n{out}\n[exit {code}]\n\n"));
        }
        format!("{r}--- up.log (last 40 lines) ---\n{}", tail(&up_log, 40))
    };

    let mut failures = Vec::new();
    for (i, command) in commands.iter().enumerate() {
        let (out, code) = &results[i];
        let expected: Vec<_> = EXPECTED
            .iter()
            .filter(|(key, ..)| command.contains(key))
            .collect();
        let want = expected.first().map_or(0, |(_, code, _)| *code);
        if *code != want {
            failures.push(format!("`{command}` exited {code}, expected {want}"));
        }
        for (_, _, pieces) in &expected {
            for piece in pieces.iter().filter(|p| !out.contains(*p)) {
                failures.push(format!("`{command}` did not print {piece:?}"));
            }
        }
    }
    for (key, ..) in EXPECTED {
        let n = commands.iter().filter(|c| c.contains(key)).count();
        if n != 1 {
            failures.push(format!(
                "{n} tour commands contain {key:?} (expected exactly one)"
            ));
        }
    }
    // Nothing in the tour (its smoke checklist included) raised an alert.
    let alerts =
        std::fs::read_to_string(work.join(".sheratan/logs/alerts.jsonl")).unwrap_or_default();
    if !alerts.trim().is_empty() {
        failures.push(format!("the tour raised alerts:\n{alerts}"));
    }
    assert!(failures.is_empty(), "{failures:#?}\n\n{}", report());
}

fn run_with_deadline(mut cmd: Command, limit: Duration) -> String {
    let out_path = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    let file = std::fs::File::create(&out_path).unwrap();
    let mut child = cmd
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("unshare runs (the suite runs as root)");
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::read_to_string(&out_path).unwrap_or_default()
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
