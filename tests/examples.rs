//! Runs the seed examples (built by `cargo test` beside the test binaries)
//! and compares what they print with the tutorial's output.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/examples-<hash> -> target/<profile>/examples/<name>
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
        "{} is not built: run the whole suite with `cargo test` (it builds the examples) or `cargo build --examples` first",
        path.display()
    );
    let mut child = Command::new(&path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start example");
    let stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).expect("read stdout"));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
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
fn pipe_prints_the_message() {
    assert_eq!(run("pipe"), "(42, None, \"hello\")\n");
}

#[test]
fn value_array_prints_the_shared_values() {
    assert_eq!(
        run("value_array"),
        "3.1415927\n[0, -1, -2, -3, -4, -5, -6, -7, -8, -9]\n"
    );
}

#[test]
fn tour_runs_every_program_in_order() {
    let out = run("tour");
    let sections = [
        "1. Queue",
        "2. Pipe",
        "3. Manager",
        "4. Manager Namespace",
        "5. Value and Array",
        "6. CSP",
    ];
    let mut at = 0;
    for s in sections {
        let found = out[at..]
            .find(&format!("== {s}"))
            .unwrap_or_else(|| panic!("section {s} missing:\n{out}"));
        at += found;
    }
    assert!(
        out.contains("== 2. Pipe ==\n(42, None, \"hello\")\n"),
        "{out}"
    );
}
