//! Selection over writers that offer all the time: PyCSP's `selecttest.py`
//! expects a fair selection to serve every such writer, and a priority
//! selection to serve the first guard. Writers run as threads and as OS
//! processes (both start methods), since a writer in another process takes
//! longer to come back after each handover.

mod common;

use std::time::Duration;

use common::{ensure, in_child_within, join, start, watchdog};
use multiproc::csp::{Alternation, Channel, ChannelError, Fair, Reader, Writer};

/// Selections per run.
const SELECTS: usize = 1000;
/// Runs per case; every run must meet the bound.
const RUNS: usize = 3;

/// Writes `id` for ever, until the channel is poisoned; any other error
/// is returned as text.
fn always_writing((out, id): (Writer<u32>, u32)) -> Result<(), String> {
    loop {
        match out.write(&id) {
            Ok(()) => {}
            Err(ChannelError::Poisoned) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// How many of `SELECTS` selections each of two inputs won.
fn count(a: &Reader<u32>, b: &Reader<u32>, fair: bool) -> Result<[usize; 2], String> {
    // Both writers are running (and offering) from here on.
    for r in [a, b] {
        r.read().map_err(|e| e.to_string())?;
    }
    let mut won = [0usize; 2];
    let mut state = Fair::new();
    for _ in 0..SELECTS {
        let alt = Alternation::new().input(a, |x| x).input(b, |x| x);
        let got = if fair {
            alt.fair_select(&mut state)
        } else {
            alt.pri_select()
        }
        .map_err(|e| e.to_string())?;
        won[got as usize] += 1;
    }
    Ok(won)
}

/// Checks the split of one run: fair, each at least 40%; priority, the
/// first guard at least 95%.
fn check(won: [usize; 2], fair: bool, what: &str) -> Result<(), String> {
    if fair {
        ensure(
            won.iter().all(|&n| n * 10 >= SELECTS * 4),
            format!("{what}: fair split {won:?}"),
        )
    } else {
        ensure(
            won[0] * 100 >= SELECTS * 95,
            format!("{what}: priority split {won:?}"),
        )
    }
}

fn os_writers(fork: bool) -> Result<(), String> {
    for fair in [true, false] {
        for run in 0..RUNS {
            let chans: Vec<Channel<u32>> = (0..2).map(|_| Channel::new().unwrap()).collect();
            let mut ps = Vec::new();
            for (id, c) in chans.iter().enumerate() {
                ps.push(start(always_writing, (c.writer(), id as u32), fork)?);
            }
            let (a, b) = (chans[0].reader(), chans[1].reader());
            let won = count(&a, &b, fair);
            for c in &chans {
                c.poison();
            }
            for p in &mut ps {
                join(p)??;
            }
            check(won?, fair, &format!("run {run}"))?;
        }
    }
    Ok(())
}

// Generous bounds: on a loaded machine every selection may wait for a
// writer that is descheduled.
#[test]
fn selection_is_fair_over_always_writing_os_processes() {
    watchdog(Duration::from_secs(600), || {
        os_writers(false).unwrap_or_else(|e| panic!("spawn: {e}"));
        in_child_within(Duration::from_secs(300), os_writers, true)
            .unwrap_or_else(|e| panic!("fork: {e}"));
    });
}

#[test]
fn selection_is_fair_over_always_writing_threads() {
    watchdog(Duration::from_secs(300), || {
        for threads_only in [true, false] {
            for fair in [true, false] {
                for run in 0..RUNS {
                    let chans: Vec<Channel<u32>> = (0..2)
                        .map(|_| {
                            let b = Channel::builder();
                            if threads_only { b.threads_only() } else { b }
                                .build()
                                .unwrap()
                        })
                        .collect();
                    let ts: Vec<_> = chans
                        .iter()
                        .enumerate()
                        .map(|(id, c)| {
                            let w = c.writer();
                            std::thread::spawn(move || always_writing((w, id as u32)))
                        })
                        .collect();
                    let (a, b) = (chans[0].reader(), chans[1].reader());
                    let won = count(&a, &b, fair);
                    for c in &chans {
                        c.poison();
                    }
                    for t in ts {
                        t.join().unwrap().unwrap();
                    }
                    let what = format!("threads_only {threads_only}, run {run}");
                    check(won.unwrap(), fair, &what).unwrap();
                }
            }
        }
    });
}
