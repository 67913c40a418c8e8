//! Process-shared synchronization across real processes, with both start
//! methods and real SIGKILLs. Every test runs under a watchdog.
//!
//! Fork is only allowed from a single-threaded process, and libtest runs
//! tests on threads, so each fork scenario runs inside a spawned child,
//! which is single-threaded, and forks from there.

mod common;

use std::time::Duration;

use common::{LONG, both, ensure, eventually, join, start, watchdog};
use multiproc::*;

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

// ---------------------------------------------------------------- counters

const PROCS: usize = 3;
const ROUNDS: u64 = 3000;

fn add_locked(v: Value<u64>) {
    for _ in 0..ROUNDS {
        *v.get_lock().unwrap() += 1;
    }
}

fn add_atomic(v: Value<u64>) {
    for _ in 0..ROUNDS {
        v.fetch_add(1);
    }
}

fn counters(fork: bool) -> Result<(), String> {
    let locked = Value::new(0u64).map_err(|e| e.to_string())?;
    let atomic = Value::new(0u64).map_err(|e| e.to_string())?;
    let mut ps = Vec::new();
    for _ in 0..PROCS {
        ps.push(start(add_locked, locked.clone(), fork)?);
        ps.push(start(add_atomic, atomic.clone(), fork)?);
    }
    for p in &mut ps {
        join(p)?;
    }
    let want = PROCS as u64 * ROUNDS;
    ensure(
        locked.get().unwrap() == want,
        format!("locked count {:?}", locked.get()),
    )?;
    ensure(
        atomic.load() == want,
        format!("atomic count {}", atomic.load()),
    )
}

#[test]
fn counters_are_exact() {
    both(counters);
}

fn add_with_lock((lock, v): (Lock, RawValue<u64>)) {
    for _ in 0..ROUNDS {
        let _g = lock.acquire().unwrap();
        v.set(v.get() + 1);
    }
}

fn lock_protects(fork: bool) -> Result<(), String> {
    let lock = Lock::new().map_err(|e| e.to_string())?;
    let v = RawValue::new(0u64).map_err(|e| e.to_string())?;
    let mut ps = Vec::new();
    for _ in 0..PROCS {
        ps.push(start(add_with_lock, (lock.clone(), v.clone()), fork)?);
    }
    for p in &mut ps {
        join(p)?;
    }
    ensure(
        v.get() == PROCS as u64 * ROUNDS,
        format!("count {}", v.get()),
    )
}

#[test]
fn lock_makes_raw_increments_exact() {
    both(lock_protects);
}

// ------------------------------------------------------------ owner death

fn hold_lock((lock, ev): (Lock, Event)) {
    let _g = lock.acquire().unwrap();
    ev.set();
    sleep_forever()
}

fn lock_owner_killed(fork: bool) -> Result<(), String> {
    let lock = Lock::new().map_err(|e| e.to_string())?;
    let ev = Event::new().map_err(|e| e.to_string())?;
    let mut p = start(hold_lock, (lock.clone(), ev.clone()), fork)?;
    ensure(ev.wait_timeout(LONG), "child never took the lock")?;
    ensure(lock.is_locked(), "lock not shown as held")?;
    ensure(
        matches!(lock.try_acquire(), Err(LockError::Timeout)),
        "try_acquire on a held lock",
    )?;
    ensure(
        matches!(
            lock.acquire_timeout(Duration::from_millis(50)),
            Err(LockError::Timeout)
        ),
        "acquire_timeout on a held lock",
    )?;
    p.kill().map_err(|e| e.to_string())?;
    match lock.acquire_timeout(LONG) {
        Err(LockError::OwnerDied(g)) => drop(g),
        Err(e) => return Err(format!("expected OwnerDied, got {e:?}")),
        Ok(_) => return Err("expected OwnerDied, got a clean acquisition".into()),
    }
    // Reported once; the lock is usable again.
    ensure(lock.acquire().is_ok(), "second acquisition not clean")?;
    ensure(
        matches!(p.join_timeout(LONG), Err(JoinError::Killed { .. })),
        "child not killed",
    )
}

#[test]
fn lock_holder_killed_reports_owner_died() {
    both(lock_owner_killed);
}

fn hold_rlock((lock, ev): (RLock, Event)) {
    let _a = lock.acquire().unwrap();
    let _b = lock.acquire().unwrap();
    let _c = lock.acquire().unwrap();
    ev.set();
    sleep_forever()
}

fn rlock_owner_killed(fork: bool) -> Result<(), String> {
    let lock = RLock::new().map_err(|e| e.to_string())?;
    let ev = Event::new().map_err(|e| e.to_string())?;
    let mut p = start(hold_rlock, (lock.clone(), ev.clone()), fork)?;
    ensure(ev.wait_timeout(LONG), "child never took the lock")?;
    p.kill().map_err(|e| e.to_string())?;
    let g = match lock.acquire_timeout(LONG) {
        Err(LockError::OwnerDied(g)) => g,
        other => return Err(format!("expected OwnerDied, got {:?}", other.map(drop))),
    };
    ensure(
        lock.depth() == 1,
        format!("depth {} after recovery", lock.depth()),
    )?;
    drop(g);
    ensure(!lock.is_locked(), "one release after recovery must free it")?;
    let _ = p.join_timeout(LONG);
    Ok(())
}

#[test]
fn rlock_holder_killed_reports_owner_died() {
    both(rlock_owner_killed);
}

fn hold_value((v, ev): (Value<[u32; 2]>, Event)) {
    let mut g = v.get_lock().unwrap();
    g[0] = 1; // half of an update
    ev.set();
    sleep_forever()
}

fn value_owner_killed(fork: bool) -> Result<(), String> {
    let v = Value::new([0u32; 2]).map_err(|e| e.to_string())?;
    let ev = Event::new().map_err(|e| e.to_string())?;
    let mut p = start(hold_value, (v.clone(), ev.clone()), fork)?;
    ensure(ev.wait_timeout(LONG), "child never took the lock")?;
    p.kill().map_err(|e| e.to_string())?;
    match v.lock_timeout(LONG) {
        Err(LockError::OwnerDied(mut g)) => {
            ensure(*g == [1, 0], format!("half update not visible: {:?}", *g))?;
            g[1] = 1; // repair
        }
        other => return Err(format!("expected OwnerDied, got {:?}", other.map(drop))),
    }
    ensure(v.get().unwrap() == [1, 1], "repair lost")?;
    let _ = p.join_timeout(LONG);
    Ok(())
}

#[test]
fn value_lock_holder_killed_reports_owner_died() {
    both(value_owner_killed);
}

fn hold_array((a, ev): (Array<u8>, Event)) {
    let _g = a.get_lock().unwrap();
    ev.set();
    sleep_forever()
}

#[test]
fn array_lock_holder_killed_reports_owner_died() {
    watchdog(Duration::from_secs(60), || {
        let a = Array::<u8>::new(4).unwrap();
        let ev = Event::new().unwrap();
        let p = start(hold_array, (a.clone(), ev.clone()), false).unwrap();
        assert!(ev.wait_timeout(LONG));
        p.kill().unwrap();
        let err = a.get(0).unwrap_err();
        assert!(
            matches!(err, ArrayError::Lock(LockError::OwnerDied(0))),
            "{err:?}"
        );
        assert_eq!(a.get(0).unwrap(), 0);
    });
}

#[test]
fn thread_exiting_with_the_lock_reports_owner_died() {
    watchdog(Duration::from_secs(60), || {
        let lock = Lock::new().unwrap();
        let l2 = lock.clone();
        std::thread::spawn(move || {
            std::mem::forget(l2.acquire().unwrap());
        })
        .join()
        .unwrap();
        assert!(lock.acquire_timeout(LONG).unwrap_err().is_owner_died());
        assert!(lock.acquire().is_ok());
    });
}

#[test]
fn thread_exiting_with_several_locks_reports_only_those_it_held() {
    // Locks taken and released out of order: the ones still held when the
    // thread ends report OwnerDied, the released ones do not.
    watchdog(Duration::from_secs(60), || {
        let (a, b, c) = (
            Lock::new().unwrap(),
            Lock::new().unwrap(),
            Lock::new().unwrap(),
        );
        let v = Value::new(0u32).unwrap();
        let (a2, b2, c2, v2) = (a.clone(), b.clone(), c.clone(), v.clone());
        std::thread::spawn(move || {
            let ga = a2.acquire().unwrap();
            let gb = b2.acquire().unwrap();
            let gc = c2.acquire().unwrap();
            let mut gv = v2.get_lock().unwrap();
            *gv = 7;
            drop(gb);
            std::mem::forget(gv);
            drop(ga);
            std::mem::forget(gc);
        })
        .join()
        .unwrap();
        assert!(a.try_acquire().is_ok(), "released lock a");
        assert!(b.try_acquire().is_ok(), "released lock b");
        assert!(c.acquire_timeout(LONG).unwrap_err().is_owner_died());
        match v.get_lock() {
            Err(LockError::OwnerDied(g)) => assert_eq!(*g, 7),
            Err(e) => panic!("expected OwnerDied, got {e:?}"),
            Ok(_) => panic!("expected OwnerDied, got a clean acquisition"),
        }
        assert!(c.acquire().is_ok() && v.get().is_ok());
    });
}

fn child_of_a_lock_user(fork: bool) -> Result<(), String> {
    // The parent thread locks first (so it knows its own thread id), then
    // starts the child: a forked child must take the lock under its own
    // id, so that the parent sees it held (not as its own) and learns of
    // its death.
    let lock = Lock::new().map_err(|e| e.to_string())?;
    drop(lock.acquire().map_err(|e| e.to_string())?);
    let ev = Event::new().map_err(|e| e.to_string())?;
    let mut p = start(hold_lock, (lock.clone(), ev.clone()), fork)?;
    ensure(ev.wait_timeout(LONG), "child never took the lock")?;
    ensure(
        matches!(lock.try_acquire(), Err(LockError::Timeout)),
        "try_acquire on the child's lock",
    )?;
    p.kill().map_err(|e| e.to_string())?;
    ensure(
        lock.acquire_timeout(LONG)
            .err()
            .is_some_and(|e| e.is_owner_died()),
        "expected OwnerDied",
    )?;
    ensure(
        matches!(p.join_timeout(LONG), Err(JoinError::Killed { .. })),
        "child not killed",
    )
}

#[test]
fn child_of_a_lock_user_owns_the_lock_as_itself() {
    both(child_of_a_lock_user);
}

#[test]
fn relocking_a_lock_is_an_error_not_a_hang() {
    watchdog(Duration::from_secs(60), || {
        let lock = Lock::new().unwrap();
        let _g = lock.acquire().unwrap();
        assert!(matches!(lock.acquire(), Err(LockError::WouldDeadlock)));
        assert!(matches!(lock.try_acquire(), Err(LockError::WouldDeadlock)));
        let v = Value::new(1u8).unwrap();
        let _vg = v.get_lock().unwrap();
        assert!(matches!(v.get(), Err(LockError::WouldDeadlock)));
    });
}

#[test]
fn rlock_recursion_and_threads() {
    watchdog(Duration::from_secs(60), || {
        let lock = RLock::new().unwrap();
        let a = lock.acquire().unwrap();
        let b = lock.try_acquire().unwrap();
        assert_eq!(lock.depth(), 2);
        let l2 = lock.clone();
        let other = std::thread::spawn(move || l2.try_acquire().is_ok())
            .join()
            .unwrap();
        assert!(!other, "another thread got a held RLock");
        drop(b);
        assert!(lock.is_locked());
        drop(a);
        assert!(!lock.is_locked());
    });
}

// -------------------------------------------------------------- semaphores

fn use_semaphore((sem, active, peak): (Semaphore, Value<u32>, Value<u32>)) {
    for _ in 0..20 {
        assert!(sem.acquire_timeout(LONG));
        let now = active.fetch_add(1) + 1;
        let mut p = peak.load();
        while now > p {
            match peak.compare_exchange(p, now) {
                Ok(_) => break,
                Err(q) => p = q,
            }
        }
        std::thread::sleep(Duration::from_millis(1));
        active.fetch_sub(1);
        sem.release().unwrap();
    }
}

fn semaphore_limits(fork: bool) -> Result<(), String> {
    let sem = Semaphore::new(2).map_err(|e| e.to_string())?;
    let active = Value::new(0u32).map_err(|e| e.to_string())?;
    let peak = Value::new(0u32).map_err(|e| e.to_string())?;
    let mut ps = Vec::new();
    for _ in 0..4 {
        ps.push(start(
            use_semaphore,
            (sem.clone(), active.clone(), peak.clone()),
            fork,
        )?);
    }
    for p in &mut ps {
        join(p)?;
    }
    ensure(peak.load() <= 2, format!("{} holders at once", peak.load()))?;
    ensure(peak.load() >= 1, "nobody held it")?;
    ensure(sem.get_value() == 2, format!("value {}", sem.get_value()))
}

#[test]
fn semaphore_limits_holders_across_processes() {
    both(semaphore_limits);
}

fn release_later(sem: BoundedSemaphore) {
    std::thread::sleep(Duration::from_millis(50));
    sem.release().unwrap();
}

#[test]
fn semaphore_wakes_and_times_out() {
    watchdog(Duration::from_secs(60), || {
        let sem = BoundedSemaphore::new(1).unwrap();
        assert_eq!(
            sem.release(),
            Err(ReleaseError::TooManyReleases { bound: 1 })
        );
        sem.acquire();
        assert!(!sem.acquire_timeout(Duration::from_millis(20)));
        let mut p = start(release_later, sem.clone(), false).unwrap();
        assert!(sem.acquire_timeout(LONG));
        join(&mut p).unwrap();
        let plain = Semaphore::new(0).unwrap();
        plain.release_n(3).unwrap();
        assert_eq!(plain.get_value(), 3);
        assert!(Semaphore::new(u32::MAX).unwrap().release().is_err());
    });
}

// ------------------------------------------------------------------ events

fn pong((ping, pong, rounds): (Event, Event, u32)) -> u32 {
    for _ in 0..rounds {
        assert!(ping.wait_timeout(LONG));
        ping.clear();
        pong.set();
    }
    rounds
}

fn event_ping_pong(fork: bool) -> Result<(), String> {
    let ping = Event::new().map_err(|e| e.to_string())?;
    let pong_ev = Event::new().map_err(|e| e.to_string())?;
    let rounds = 200;
    let mut p = start(pong, (ping.clone(), pong_ev.clone(), rounds), fork)?;
    for i in 0..rounds {
        ping.set();
        ensure(pong_ev.wait_timeout(LONG), format!("no pong {i}"))?;
        pong_ev.clear();
    }
    ensure(join(&mut p)? == rounds, "child rounds")?;
    ensure(
        !ping.wait_timeout(Duration::from_millis(10)),
        "clear event waited",
    )
}

#[test]
fn event_ping_pong_between_processes() {
    both(event_ping_pong);
}

// -------------------------------------------------------------- conditions

fn produce((cond, items, n): (Condition, Value<u32>, u32)) {
    for _ in 0..n {
        let g = cond.acquire().unwrap();
        items.fetch_add(1);
        g.notify_all();
        drop(g);
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn condition_producer(fork: bool) -> Result<(), String> {
    let cond =
        Condition::with_lock(Lock::new().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let items = Value::new(0u32).map_err(|e| e.to_string())?;
    let n = 50;
    let mut g = cond.acquire().map_err(|e| e.to_string())?;
    let mut p = start(produce, (cond.clone(), items.clone(), n), fork)?;
    let mut seen = 0;
    while seen < n {
        let ok = g
            .wait_for_timeout(|| items.load() > seen, LONG)
            .map_err(|e| e.to_string())?;
        ensure(ok, format!("no item after {seen}"))?;
        seen = items.load();
    }
    drop(g);
    join(&mut p)?;
    Ok(())
}

#[test]
fn condition_wakes_a_waiter_in_another_process() {
    both(condition_producer);
}

#[test]
fn condition_over_rlock_restores_depth_and_times_out() {
    watchdog(Duration::from_secs(60), || {
        let lock = RLock::new().unwrap();
        let cond = Condition::with_lock(lock.clone()).unwrap();
        let outer = lock.acquire().unwrap();
        let mut g = cond.acquire().unwrap();
        assert_eq!(lock.depth(), 2);
        // While waiting the lock is free for other threads.
        let c2 = cond.clone();
        let t = std::thread::spawn(move || {
            let g = c2.acquire_timeout(LONG).unwrap();
            g.notify_all();
        });
        assert!(g.wait_timeout(LONG).unwrap());
        assert_eq!(lock.depth(), 2);
        t.join().unwrap();
        assert!(!g.wait_timeout(Duration::from_millis(20)).unwrap());
        assert_eq!(lock.depth(), 2);
        drop(g);
        drop(outer);
        assert!(!lock.is_locked());
    });
}

fn grab_and_die((cond, ev): (Condition, Event)) {
    let g = cond.acquire().unwrap();
    g.notify_all();
    ev.set();
    std::mem::forget(g);
    sleep_forever()
}

#[test]
fn condition_waiter_recovers_lock_of_killed_notifier() {
    watchdog(Duration::from_secs(60), || {
        let cond = Condition::new().unwrap();
        let ev = Event::new().unwrap();
        let mut g = cond.acquire().unwrap();
        // The child can take the lock only once our wait releases it; it
        // notifies, then is killed while holding the lock.
        let p = start(grab_and_die, (cond.clone(), ev.clone()), false).unwrap();
        let killer = std::thread::spawn(move || {
            assert!(ev.wait_timeout(LONG));
            p.kill().unwrap();
            p
        });
        let r = g.wait_timeout(LONG);
        assert!(matches!(r, Err(LockError::OwnerDied(true))), "{r:?}");
        drop(g);
        let mut p = killer.join().unwrap();
        assert!(cond.try_acquire().is_ok());
        let _ = p.join_timeout(LONG);
    });
}

// ---------------------------------------------------------------- barriers

fn meet((b, rounds): (Barrier, u32)) -> Vec<usize> {
    (0..rounds).map(|_| b.wait_timeout(LONG).unwrap()).collect()
}

fn barrier_rounds(fork: bool) -> Result<(), String> {
    let b = Barrier::new(3).map_err(|e| e.to_string())?;
    let rounds = 20;
    let mut p1 = start(meet, (b.clone(), rounds), fork)?;
    let mut p2 = start(meet, (b.clone(), rounds), fork)?;
    let mine: Vec<usize> = (0..rounds)
        .map(|_| b.wait_timeout(LONG))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let a = join(&mut p1)?;
    let c = join(&mut p2)?;
    for r in 0..rounds as usize {
        let mut idx = [mine[r], a[r], c[r]];
        idx.sort();
        ensure(idx == [0, 1, 2], format!("round {r}: indices {idx:?}"))?;
    }
    ensure(
        b.n_waiting() == 0 && !b.broken(),
        "barrier state after rounds",
    )
}

#[test]
fn barrier_passes_rounds_across_processes() {
    both(barrier_rounds);
}

fn wait_at_barrier(b: Barrier) -> String {
    match b.wait_timeout(LONG) {
        Ok(i) => format!("passed {i}"),
        Err(e) => format!("{e:?}"),
    }
}

fn hold_barrier((b, ev): (Barrier, Event)) {
    let _keep = b;
    ev.set();
    sleep_forever()
}

fn barrier_party_killed(fork: bool) -> Result<(), String> {
    let b = Barrier::new(3).map_err(|e| e.to_string())?;
    let ev = Event::new().map_err(|e| e.to_string())?;
    let mut waiter = start(wait_at_barrier, b.clone(), fork)?;
    let mut victim = start(hold_barrier, (b.clone(), ev.clone()), fork)?;
    ensure(ev.wait_timeout(LONG), "victim never started")?;
    let victim_pid = victim.pid().unwrap_or(0);
    // Let the waiter arrive (not required: a death is noticed either way).
    for _ in 0..1000 {
        if b.n_waiting() > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    victim.kill().map_err(|e| e.to_string())?;
    let mine = b.wait_timeout(LONG);
    ensure(
        matches!(mine, Err(BarrierError::PartyDied { pid }) if pid == victim_pid),
        format!("parent: {mine:?}, victim {victim_pid}"),
    )?;
    let theirs = join(&mut waiter)?;
    ensure(
        theirs == format!("PartyDied {{ pid: {victim_pid} }}"),
        format!("waiter: {theirs}"),
    )?;
    ensure(b.broken(), "barrier not broken")?;
    ensure(
        matches!(b.wait_timeout(LONG), Err(BarrierError::PartyDied { .. })),
        "broken barrier let a wait through",
    )?;
    let _ = victim.join_timeout(LONG);
    // After a reset the barrier works again for live parties.
    b.reset().map_err(|e| e.to_string())?;
    let mut w1 = start(wait_at_barrier, b.clone(), fork)?;
    let mut w2 = start(wait_at_barrier, b.clone(), fork)?;
    let mine = b.wait_timeout(LONG).map_err(|e| e.to_string())?;
    let r1 = join(&mut w1)?;
    let r2 = join(&mut w2)?;
    ensure(
        r1.starts_with("passed") && r2.starts_with("passed") && mine < 3,
        format!("after reset: {mine} {r1} {r2}"),
    )
}

#[test]
fn barrier_broken_by_killed_party() {
    both(barrier_party_killed);
}

/// Starts a party that waits at `b` (two parties), waits until it is
/// counted, then SIGKILLs and reaps it; returns its pid.
fn kill_a_counted_party(b: &Barrier, fork: bool) -> Result<i32, String> {
    let mut child = start(wait_at_barrier, b.clone(), fork)?;
    ensure(
        eventually(LONG, || b.n_waiting() == 1),
        "the child never arrived",
    )?;
    let pid = child.pid().unwrap_or(0);
    child.kill().map_err(|e| e.to_string())?;
    let joined = child.join_timeout(LONG);
    ensure(
        matches!(joined, Err(JoinError::Killed { .. })),
        format!("join of the killed party: {joined:?}"),
    )?;
    Ok(pid)
}

/// A party killed while counted in the barrier: the next arrival must not
/// complete the barrier with it (it used to return `Ok(1)`).
fn barrier_arrival_after_a_party_died(fork: bool) -> Result<(), String> {
    let b = Barrier::new(2).map_err(|e| e.to_string())?;
    let pid = kill_a_counted_party(&b, fork)?;
    let mine = b.wait_timeout(Duration::from_secs(5));
    ensure(
        matches!(mine, Err(BarrierError::PartyDied { pid: p }) if p == pid),
        format!("wait after the death of {pid}: {mine:?}"),
    )?;
    ensure(
        b.broken() && b.n_waiting() == 0,
        format!("after: broken {} n_waiting {}", b.broken(), b.n_waiting()),
    )?;
    // A reset makes it usable again.
    b.reset().map_err(|e| e.to_string())?;
    let mut other = start(wait_at_barrier, b.clone(), fork)?;
    let mine = b.wait_timeout(LONG).map_err(|e| e.to_string())?;
    let theirs = join(&mut other)?;
    ensure(
        theirs.starts_with("passed") && mine < 2,
        format!("after reset: {mine} {theirs}"),
    )
}

#[test]
fn barrier_arrival_sees_a_killed_waiter() {
    both(barrier_arrival_after_a_party_died);
}

/// The same death, seen through `broken` and `n_waiting` before any wait.
fn barrier_state_after_a_party_died(fork: bool) -> Result<(), String> {
    let b = Barrier::new(2).map_err(|e| e.to_string())?;
    let pid = kill_a_counted_party(&b, fork)?;
    ensure(
        b.broken() && b.n_waiting() == 0,
        format!("after: broken {} n_waiting {}", b.broken(), b.n_waiting()),
    )?;
    let mine = b.wait_timeout(Duration::from_secs(5));
    ensure(
        matches!(mine, Err(BarrierError::PartyDied { pid: p }) if p == pid),
        format!("wait after the death of {pid}: {mine:?}"),
    )
}

#[test]
fn barrier_state_shows_a_killed_waiter() {
    both(barrier_state_after_a_party_died);
}

#[test]
fn barrier_timeout_abort_and_reset() {
    watchdog(Duration::from_secs(60), || {
        let b = Barrier::new(2).unwrap();
        let mut p = start(wait_at_barrier, b.clone(), false).unwrap();
        // Let the child arrive, then time out here? No: with two parties our
        // own wait would complete the barrier. Abort instead.
        while b.n_waiting() < 1 {
            std::thread::sleep(Duration::from_millis(5));
        }
        b.abort().unwrap();
        assert_eq!(join(&mut p).unwrap(), "Broken");
        assert!(matches!(b.wait(), Err(BarrierError::Broken)));
        b.reset().unwrap();
        assert!(!b.broken());
        let t = b.clone();
        let h = std::thread::spawn(move || t.wait_timeout(Duration::from_millis(50)));
        let r = h.join().unwrap();
        assert!(matches!(r, Err(BarrierError::Timeout)), "{r:?}");
        assert!(b.broken());
        b.reset().unwrap();
        let t = b.clone();
        let h = std::thread::spawn(move || t.wait_timeout(LONG).unwrap());
        let mine = b.wait_timeout(LONG).unwrap();
        assert_eq!(mine + h.join().unwrap(), 1);
        assert!(Barrier::new(0).is_err());
    });
}

// ------------------------------------------------------------ type checks

#[test]
fn handles_refuse_another_type() {
    watchdog(Duration::from_secs(60), || {
        let (a, b) = pipe().unwrap();
        a.send(&Value::new(5u32).unwrap()).unwrap();
        let r = b.recv::<Value<i64>>();
        assert!(matches!(r, Err(RecvError::Codec(_))), "{r:?}");
        a.send(&Lock::new().unwrap()).unwrap();
        assert!(b.recv::<Event>().is_err());
        a.send(&Array::<u8>::new(3).unwrap()).unwrap();
        assert_eq!(b.recv::<Array<u8>>().unwrap().len(), 3);
    });
}

fn leak_a_guard(_: ()) -> bool {
    std::thread::spawn(|| {
        let a = Lock::new().unwrap();
        std::mem::forget(a.acquire().unwrap());
        // Every handle to `a` goes while this thread still holds it;
        // nothing of this thread may point into `a`'s memory any more (a
        // robust mutex would, by its place in the thread's robust list):
        // locking others and ending the thread must not touch it (`b` is
        // large so that it is not mapped into `a`'s old place).
        drop(a);
        let b = Array::<u8>::new(1 << 20).unwrap();
        for _ in 0..1000 {
            drop(b.get_lock().unwrap());
        }
        // The thread then ends holding `a`.
    })
    .join()
    .is_ok()
}

#[test]
fn leaked_guard_keeps_its_memory_mapped() {
    // In a child of its own, where no other test's mappings can fill the
    // hole an unmapped lock would leave: a fault there kills the child.
    watchdog(Duration::from_secs(60), || {
        let mut p = start(leak_a_guard, (), false).unwrap();
        let r = p.join_timeout(LONG);
        assert!(matches!(r, Ok(true)), "{r:?}");
    });
}

fn wait_on_semaphore((sem, ev): (Semaphore, Event)) {
    ev.set();
    sem.acquire();
}

#[test]
fn killed_semaphore_waiter_takes_nothing() {
    watchdog(Duration::from_secs(60), || {
        let sem = Semaphore::new(0).unwrap();
        let ev = Event::new().unwrap();
        let mut p = start(wait_on_semaphore, (sem.clone(), ev.clone()), false).unwrap();
        assert!(ev.wait_timeout(LONG));
        std::thread::sleep(Duration::from_millis(20));
        p.kill().unwrap();
        let _ = p.join_timeout(LONG);
        sem.release().unwrap();
        assert_eq!(sem.get_value(), 1);
        assert!(sem.try_acquire());
        assert!(!sem.try_acquire());
    });
}

#[test]
fn handles_are_send_sync_clone() {
    fn check<T: Send + Sync + Clone + serde::Serialize + serde::de::DeserializeOwned>() {}
    check::<Lock>();
    check::<RLock>();
    check::<Semaphore>();
    check::<BoundedSemaphore>();
    check::<Event>();
    check::<Condition>();
    check::<Barrier>();
    check::<Value<f64>>();
    check::<RawValue<u8>>();
    check::<Array<i32>>();
    check::<RawArray<[u8; 4]>>();
    check::<SharedMemory>();
}
