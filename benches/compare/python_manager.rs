//! A Python client calling a manager served by the crate
//! (`multiproc::manager::python::serve`, in the bench process) against the
//! same Python client calling a Python manager.
//!
//! * `manager.python_client.list_append`: a Python `SyncManager` client
//!   (`python3 -c`, started per measurement; only its loop is timed, by
//!   itself) doing `lst.append(i)` on a list proxy, ops/s. Raw: the
//!   crate's Rust client (`manager::python::connect`) doing the same
//!   appends against the same server. Python: `manager.list_append_child`'s
//!   measurement (a Python client of `multiprocessing.Manager()`).
//!
//! The server runs threads, so this row runs in a forked child.

use std::process::Command;
use std::time::Instant;

use multiproc::manager::python;

use crate::harness::{BenchResult, Ctx, Figures, Row, Unit, alternate, in_forked_child};

const KEY: &[u8] = b"bench";

const CLIENT: &str = r#"
import sys, time
from multiprocessing.managers import SyncManager
m = SyncManager(address=('127.0.0.1', int(sys.argv[1])), authkey=b'bench')
m.connect()
lst = m.list()
n = int(sys.argv[2])
for i in range(100):
    lst.append(i)
t0 = time.perf_counter()
for i in range(n):
    lst.append(i)
print(n / (time.perf_counter() - t0))
"#;

pub fn rows() -> Vec<Row> {
    vec![Row {
        name: "manager.python_client.list_append",
        unit: Unit::OpsPerSec,
        run: |ctx| in_forked_child(|| list_append(ctx)),
        python: true,
        round_trip: false,
    }]
}

fn list_append(ctx: &Ctx) -> BenchResult<Figures> {
    let server = python::serve("127.0.0.1:0", KEY)?;
    let port = match server.address() {
        multiproc::Address::Tcp(a) => a.port(),
        other => return Err(format!("unexpected address {other:?}").into()),
    };
    let n: u64 = ctx.pick(1_000, 10_000);
    alternate(
        0,
        ctx.pick(1, 3),
        || {
            let out = Command::new("python3")
                .args(["-c", CLIENT, &port.to_string(), &n.to_string()])
                .output()?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().parse::<f64>()?)
        },
        || {
            let client = python::connect(server.address(), KEY)?;
            let lst = client.list::<i64>(&[])?;
            for i in 0..100i64 {
                lst.call::<()>("append", (i,))?;
            }
            let t0 = Instant::now();
            for i in 0..n as i64 {
                lst.call::<()>("append", (i,))?;
            }
            Ok(n as f64 / t0.elapsed().as_secs_f64())
        },
    )
}
