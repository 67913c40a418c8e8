//! The lock word under `Lock`, `RLock`, `Condition` and the `Value`/`Array`
//! locks against holders SIGKILLed at random points while other processes
//! contend for it, with both start methods, under a watchdog: a death while
//! holding is reported to exactly one acquirer, nobody hangs, and a clean
//! acquisition always finds the guarded record complete.
//!
//! Replay a failed run with `MULTIPROC_LOCK_STRESS_SEED=<hex seed>` (the
//! seed is in the failure message).

mod common;

use std::time::Duration;

use common::{LONG, both, ensure, start, stress_seed};
use multiproc::*;

/// The guarded record: `[a, b, holder]`. Complete when `a == b` and
/// `holder == FREE`; a holder marks itself first and unmarks last.
type Record = Value<[u64; 3]>;

const FREE: u64 = 0;
const VICTIM: u64 = 1;
const CONTENDER: u64 = 2;
const PARENT: u64 = 3;

/// Victims killed per start method.
const ROUNDS: u64 = 12;

/// What an acquirer found, and whether that was allowed: a clean
/// acquisition must find the record complete; an owner-died one finds it
/// as the dead victim left it, and completes it. Returns whether the lock
/// was reported owner-died.
fn take_turn(v: &Record, me: u64, hold_spins: u32) -> Result<bool, String> {
    let (mut g, died) = match v.lock_timeout(LONG) {
        Ok(g) => (g, false),
        Err(LockError::OwnerDied(g)) => (g, true),
        Err(e) => return Err(format!("party {me}: acquire failed: {e}")),
    };
    let [a, b, holder] = *g;
    if died {
        // Only a victim can die holding the lock.
        if holder != FREE && holder != VICTIM {
            return Err(format!("party {me}: owner-died, holder mark {holder}"));
        }
        g[1] = g[0];
    } else if a != b || holder != FREE {
        return Err(format!(
            "party {me}: clean acquisition found [{a}, {b}, {holder}] (a live holder \
             robbed, or a dead one not reported)"
        ));
    }
    g[2] = me;
    g[0] += 1;
    for _ in 0..hold_spins {
        std::hint::spin_loop();
    }
    g[1] += 1;
    g[2] = FREE;
    Ok(died)
}

/// Updates the record until killed, holding the lock long enough that a
/// kill often lands inside.
fn victim((v, ready): (Record, Event)) -> Result<(), String> {
    ready.set();
    loop {
        take_turn(&v, VICTIM, 20_000)?;
    }
}

/// Updates the record until `stop`; returns (turns, owner-died reports).
fn contender((v, stop): (Record, Event)) -> Result<(u64, u64), String> {
    let (mut turns, mut died) = (0, 0);
    while !stop.is_set() {
        died += take_turn(&v, CONTENDER, 100)? as u64;
        turns += 1;
    }
    Ok((turns, died))
}

/// A small xorshift generator for the kill delays.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn holders_killed_while_others_contend(fork: bool) -> Result<(), String> {
    let seed = stress_seed("MULTIPROC_LOCK_STRESS_SEED");
    let with_seed = |e: String| format!("{e} (seed {seed:x})");
    let mut rng = seed | 1;
    let v = Record::new([0; 3]).map_err(|e| e.to_string())?;
    let stop = Event::new().map_err(|e| e.to_string())?;
    let mut contenders = Vec::new();
    for _ in 0..2 {
        contenders.push(start(contender, (v.clone(), stop.clone()), fork)?);
    }
    let mut died = 0;
    for _ in 0..ROUNDS {
        let ready = Event::new().map_err(|e| e.to_string())?;
        let mut p = start(victim, (v.clone(), ready.clone()), fork)?;
        ensure(ready.wait_timeout(LONG), "victim never started")?;
        std::thread::sleep(Duration::from_micros(next(&mut rng) % 3000));
        p.kill().map_err(|e| e.to_string())?;
        let r = p.join_timeout(LONG);
        ensure(
            matches!(r, Err(JoinError::Killed { .. })),
            format!("victim not killed: {:?}", r.map(drop)),
        )?;
        died += take_turn(&v, PARENT, 0).map_err(with_seed)? as u64;
    }
    stop.set();
    let mut turns = 0;
    for mut p in contenders {
        let (t, d) = p
            .join_timeout(LONG)
            .map_err(|e| e.to_string())?
            .map_err(with_seed)?;
        turns += t;
        died += d;
    }
    ensure(
        died <= ROUNDS,
        with_seed(format!("{died} owner-died reports for {ROUNDS} victims")),
    )?;
    ensure(turns > 0, "the contenders never got the lock")?;
    // The victims hold the lock most of the time they run: some kills
    // must land inside (else this tested nothing).
    ensure(
        died > 0,
        with_seed("no victim died holding the lock".into()),
    )?;
    // The record is complete and the lock free and clean.
    let g = v.lock_timeout(LONG).map_err(|e| e.to_string())?;
    ensure(
        g[0] == g[1] && g[2] == FREE,
        with_seed(format!("final record {:?}", *g)),
    )
}

#[test]
fn lock_holders_killed_at_random_points_while_others_contend() {
    both(holders_killed_while_others_contend);
}
