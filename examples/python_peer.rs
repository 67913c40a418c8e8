//! A Python producer and a Rust consumer sharing a queue through a Python
//! manager: runs `python3 examples/python_peer.py`, which serves a
//! `queue.Queue` as the typeid `get_jobs` and fills it with dicts; this
//! side connects with `manager::python::connect`, gets a proxy to the same
//! queue and takes jobs (as serde structs) until the `None` sentinel.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use multiproc::manager::python;
use serde::Deserialize;

/// A job as the Python producer writes it: `{"id": .., "text": .., "weight": ..}`.
#[derive(Deserialize, Debug)]
struct Job {
    id: u32,
    text: String,
    weight: f64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python_peer.py");
    let mut peer = Command::new("python3")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut port = String::new();
    BufReader::new(peer.stdout.take().expect("piped")).read_line(&mut port)?;
    let address = format!("127.0.0.1:{}", port.trim());

    let manager = python::connect(address.as_str(), b"python-peer")?;
    let jobs = manager.create("get_jobs", ())?;
    let mut total = 0.0;
    // `get` blocks in the Python server until the producer has put a job.
    while let Some(job) = jobs.call::<Option<Job>>("get", ())? {
        println!("{}: {} (weight {})", job.id, job.text, job.weight);
        total += job.weight;
    }
    println!("total weight {total}");

    drop(jobs);
    drop(peer.stdin.take()); // the peer exits when its stdin closes
    peer.wait()?;
    Ok(())
}
