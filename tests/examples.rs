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

/// Runs an example with a watchdog and returns its stdout. Its stderr (a
/// progress display) is kept out of the test run's output and shown only
/// if the example fails.
fn run(name: &str) -> String {
    let path = example(name);
    assert!(
        path.exists(),
        "{} is not built: run the whole suite with `cargo test` (it builds the examples) or `cargo build --examples` first",
        path.display()
    );
    let mut child = Command::new(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start example");
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).expect("read stdout"));
    let err_reader =
        std::thread::spawn(move || std::io::read_to_string(stderr).expect("read stderr"));
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
    let err = err_reader.join().expect("stderr reader");
    assert!(
        status.success(),
        "example {name} failed: {status}\n{out}\nstderr:\n{err}"
    );
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
fn pool_prints_squares() {
    let squares: Vec<u64> = (0..10).map(|x| x * x).collect();
    let slow: Vec<u64> = (0..20).map(|x| x * x).collect();
    assert_eq!(
        run("pool"),
        format!("squares: {squares:?}\nslow squares (sorted): {slow:?}\n")
    );
}

const MANAGER_LIST: &str = "A New record is added\n\nName: Computers\nScore: 1\n\nName: Histoty\nScore: 5\n\nName: Hindi\nScore: 9\n\nName: English\nScore: 3\n\n";
const NAMESPACE: &str = "before Namespace(x=1, y=1)\nafter Namespace(x=6, y=10)\n";
const QUEUE: &str = "(42, None, \"hello\")\n";
const VALUE_ARRAY: &str = "3.1415927\n[0, -1, -2, -3, -4, -5, -6, -7, -8, -9]\n";

#[test]
fn queue_prints_the_message() {
    assert_eq!(run("queue"), QUEUE);
}

#[test]
fn queue_iter_loop_ends_when_the_producer_is_done() {
    assert_eq!(
        run("queue_iter"),
        "order 1: 3 × apple\norder 2: 1 × pear\norder 3: 12 × plum\n16 items in all\n"
    );
}

#[test]
fn manager_list_prints_every_record() {
    assert_eq!(run("manager_list"), MANAGER_LIST);
}

#[test]
fn namespace_prints_before_and_after() {
    assert_eq!(run("namespace"), NAMESPACE);
}

/// `P1 exiting` and `P2 exiting` in either order, then `Terminating`:
/// once with threads, once with OS processes.
fn check_csp(out: &str) {
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
fn csp_prints_both_exits_then_terminating_twice() {
    check_csp(&run("csp"));
}

#[test]
fn csp_pipeline_squares_and_sums() {
    let expect: String = (1..=10u64)
        .map(|i| format!("{}\n", i * i))
        .collect::<String>()
        + "total 385\n";
    assert_eq!(run("csp_pipeline"), expect);
}

#[test]
fn csp_stages_returns_three_types() {
    assert_eq!(
        run("csp_stages"),
        "4\n5\n3\n5\nsent 4 words, longest \"quick\", 17 letters\n"
    );
}

#[test]
fn tour_runs_every_program_in_order() {
    let out = run("tour");
    let section = |title: &str| -> &str {
        let start = out
            .find(&format!("== {title}"))
            .unwrap_or_else(|| panic!("section {title} missing:\n{out}"));
        let body = &out[start..];
        let body = &body[body.find('\n').expect("title line") + 1..];
        &body[..body.find("\n== ").unwrap_or(body.len())]
    };
    let order = [
        "1. Queue",
        "2. Pipe",
        "3. Manager",
        "4. Manager Namespace",
        "5. Value and Array",
        "6. CSP",
        "7. Pool",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|t| out.find(&format!("== {t}")).expect("section"))
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "sections out of order:\n{out}"
    );
    // Each section is its program's output (then a blank line).
    assert_eq!(section("1. Queue"), QUEUE);
    assert_eq!(section("2. Pipe"), "(42, None, \"hello\")\n");
    assert_eq!(section("3. Manager"), MANAGER_LIST);
    assert_eq!(section("4. Manager Namespace"), NAMESPACE);
    assert_eq!(section("5. Value and Array"), VALUE_ARRAY);
    check_csp(section("6. CSP").trim_end());
    assert!(
        section("7. Pool").starts_with("squares: [0, 1, 4, 9"),
        "{out}"
    );
}

#[test]
fn python_peer_consumes_the_python_producers_jobs() {
    assert_eq!(
        run("python_peer"),
        "0: job 0 (weight 0)\n1: job 1 (weight 1.5)\n2: job 2 (weight 3)\n3: job 3 (weight 4.5)\n4: job 4 (weight 6)\ntotal weight 15\n"
    );
}
