//! Runs the code of `examples/value_array.rs` (compiled into this test, so
//! its child process is this test binary) and checks its output.

use std::sync::mpsc;
use std::time::Duration;

#[allow(dead_code)]
#[path = "../examples/value_array.rs"]
mod value_array;

#[test]
fn value_array_prints_the_tutorials_output() {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let r = value_array::run(&mut out).map_err(|e| e.to_string());
        let _ = tx.send(r.map(|()| out));
    });
    let out = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("watchdog: the example did not finish in 60 s")
        .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "3.1415927\n[0, -1, -2, -3, -4, -5, -6, -7, -8, -9]\n"
    );
}
