//! Runs the CSP seed examples (built by `cargo test` beside the test
//! binaries) and checks what they print.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn example(name: &str) -> PathBuf {
    let mut p = std::env::current_exe().expect("test binary path");
    p.pop();
    p.pop();
    p.push("examples");
    p.push(name);
    p
}

/// Runs an example with a watchdog and returns its stdout.
fn run(name: &str) -> String {
    let path = example(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo test` or `cargo build --examples`",
        path.display()
    );
    let mut child = Command::new(&path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start example");
    let stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).expect("read stdout"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("example {name} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = reader.join().expect("reader");
    assert!(status.success(), "example {name} failed: {status}\n{out}");
    out
}

#[test]
fn csp_prints_both_exits_then_terminating_twice() {
    let out = run("csp");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    for half in lines.chunks(3) {
        let mut exits = [half[0], half[1]];
        exits.sort();
        assert_eq!(exits, ["P1 exiting", "P2 exiting"], "{out}");
        assert_eq!(half[2], "Terminating", "{out}");
    }
}

#[test]
fn csp_pipeline_squares_and_sums() {
    let out = run("csp_pipeline");
    let expect: String = (1..=10u64)
        .map(|i| format!("{}\n", i * i))
        .collect::<String>()
        + "total 385\n";
    assert_eq!(out, expect);
}
