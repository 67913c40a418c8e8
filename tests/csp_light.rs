//! Lightweight CSP processes (`CspProcess::light`): PyCSP's channel and
//! alternation behaviours (`commtest.py`, `buffertest.py`,
//! `poisontest.py`, `alttest.py`, as in `csp_channels.rs` and
//! `csp_alternation.rs`) run by processes multiplexed on the worker
//! threads, networks mixing them with threads and OS processes, a panic,
//! and a network of 100,000 processes.

mod common;
mod csp_common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::watchdog;
use csp_common::{FLAVORS, Flavor, channel};
use multiproc::csp::{
    Alternation, Channel, ChannelError, CspProcess, Fair, Outcome, ProcessError, Reader, Writer,
    io, parallel, sequence, sleep, spawn,
};

const LIMIT: Duration = Duration::from_secs(60);

fn writer((out, id, n): (Writer<(u32, u32)>, u32, u32)) -> Result<Vec<(u32, u32)>, ChannelError> {
    for i in 0..n {
        out.write(&(id, i))?;
    }
    Ok(Vec::new())
}

fn reader_until_retired(inp: Reader<(u32, u32)>) -> Result<Vec<(u32, u32)>, ChannelError> {
    let mut got = Vec::new();
    loop {
        match inp.read() {
            Ok(v) => got.push(v),
            Err(ChannelError::Retired) => return Ok(got),
            Err(e) => return Err(e),
        }
    }
}

#[test]
fn one_to_one_in_order() {
    for flavor in FLAVORS {
        for buffer in [0, 1, 5] {
            watchdog(LIMIT, move || {
                let ch = channel::<(u32, u32)>(flavor, buffer);
                let out = parallel([
                    CspProcess::light(writer, (ch.writer(), 1, 100)),
                    CspProcess::light(reader_until_retired, ch.reader()),
                ])
                .unwrap();
                drop(ch);
                assert_eq!(
                    out[1].clone().value().unwrap(),
                    (0..100).map(|i| (1, i)).collect::<Vec<_>>(),
                    "{flavor:?}/{buffer}"
                );
            });
        }
    }
}

#[test]
fn any_to_any_delivers_everything_once() {
    for flavor in FLAVORS {
        for buffer in [0, 3] {
            watchdog(LIMIT, move || {
                let ch = channel::<(u32, u32)>(flavor, buffer);
                let mut procs = Vec::new();
                for id in 0..5 {
                    procs.push(CspProcess::light(writer, (ch.writer(), id, 200)));
                }
                for _ in 0..4 {
                    procs.push(CspProcess::light(reader_until_retired, ch.reader()));
                }
                drop(ch);
                let out = parallel(procs).unwrap();
                let mut all = Vec::new();
                for o in out {
                    all.extend(o.value().unwrap());
                }
                let set: BTreeSet<_> = all.iter().copied().collect();
                assert_eq!(all.len(), 1000, "{flavor:?}/{buffer}");
                assert_eq!(set.len(), 1000, "{flavor:?}/{buffer}");
            });
        }
    }
}
