//! Beyond one machine, on one machine: a driver with an embedded Zenoh
//! router, and two worker processes that share nothing with it but the
//! endpoint (and the credentials). A map runs across them, then a
//! three-stage CSP pipeline whose middle and first stages run in the
//! workers, connected by network channels homed in the driver.
//!
//! ```text
//! cargo run --features zenoh --example cluster
//! ```
//!
//! On real hosts, run the driver with `ClusterConfig::listen("tcp/0.0.0.0:7447")`
//! and start the same executable on each worker host with
//! `MULTIPROC_CLUSTER_WORKER=1 MULTIPROC_CLUSTER=tcp/<driver>:7447` and the
//! credentials in `MULTIPROC_CLUSTER_USER` / `MULTIPROC_CLUSTER_PASSWORD`.

use std::process::{Command, Stdio};
use std::time::Duration;

use multiproc::cluster::{self, ClusterConfig, ClusterPool, NetChannel, NetReader, NetWriter};
use multiproc::csp::ChannelError;

fn square(x: u64) -> u64 {
    x * x
}

/// Stage 1, in a worker: writes 0..n to `numbers`, then retires.
fn produce(n: u64) -> u64 {
    let session = ClusterConfig::from_env()
        .and_then(|c| c.open())
        .expect("join");
    let out: NetWriter<u64> = NetWriter::open(&session, "numbers").expect("open numbers");
    for i in 0..n {
        out.write(&i).expect("write");
    }
    n
}

/// Stage 2, in a worker: doubles what `numbers` carries into `doubled`
/// until `numbers` retires (then `doubled` retires with it).
fn double(_: ()) -> u64 {
    let session = ClusterConfig::from_env()
        .and_then(|c| c.open())
        .expect("join");
    let inp: NetReader<u64> = NetReader::open(&session, "numbers").expect("open numbers");
    let out: NetWriter<u64> = NetWriter::open(&session, "doubled").expect("open doubled");
    let mut n = 0;
    loop {
        match inp.read() {
            Ok(x) => out.write(&(2 * x)).expect("write"),
            Err(ChannelError::Retired) => return n,
            Err(e) => panic!("stage 2: {e}"),
        }
        n += 1;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let endpoint = format!("tcp/127.0.0.1:{port}");
    let (user, password) = (
        "example",
        format!("{:x}", std::process::id() as u64 * 2654435761),
    );
    let session = ClusterConfig::listen(endpoint.clone())
        .credentials(user, password.clone())
        .open()?;
    let pool = ClusterPool::with_session(&session)?;

    // Two workers: this executable again, in worker mode.
    let mut workers = Vec::new();
    for _ in 0..2 {
        workers.push(
            Command::new(std::env::current_exe()?)
                .env(cluster::ENV_WORKER, "1")
                .env(cluster::ENV_ENDPOINT, &endpoint)
                .env(cluster::ENV_USER, user)
                .env(cluster::ENV_PASSWORD, &password)
                .env(cluster::ENV_IDLE_EXIT_MS, "1000")
                .stdin(Stdio::null())
                .spawn()?,
        );
    }
    let joined = pool.wait_for_workers(2, Duration::from_secs(30));
    println!("workers: {joined}");

    println!("squares: {:?}", pool.map(square, 0..10u64)?);

    // The pipeline: produce (worker) -> double (worker) -> sum (here).
    let numbers: NetChannel<u64> = NetChannel::home(&session, "numbers")?;
    let doubled: NetChannel<u64> = NetChannel::home(&session, "doubled")?;
    let sink = doubled.reader()?;
    let first = pool.apply_async(produce, 10)?;
    let second = pool.apply_async(double, ())?;
    // The two tasks run at once: one waits for the other (a worker hands
    // back the task it holds behind a task that waits). A stall would end
    // in a timeout error here, not a hang.
    let mut got = Vec::new();
    loop {
        match sink.read_timeout(Duration::from_secs(60)) {
            Ok(x) => got.push(x),
            Err(ChannelError::Retired) => break,
            Err(e) => return Err(e.into()),
        }
    }
    println!(
        "pipeline: produced {}, doubled {}, received {:?}",
        first.into_value()?,
        second.into_value()?,
        got
    );
    drop((numbers, doubled, sink));

    drop(pool);
    for mut w in workers {
        w.wait()?;
    }
    Ok(())
}
