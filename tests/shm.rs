//! Shared values, arrays and named segments across real processes, with
//! both start methods. Every test runs under a watchdog.
//!
//! Fork is only allowed from a single-threaded process, and libtest runs
//! tests on threads, so each fork scenario runs inside a spawned child,
//! which is single-threaded, and forks from there.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{LONG, both, ensure, join, start, watchdog};
use multiproc::*;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "mptest-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Every `create` sweeps stale segments from `/dev/shm`, so the tests
/// that leave stale segments behind on purpose run one at a time.
static NAMED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    NAMED.lock().unwrap_or_else(|e| e.into_inner())
}

fn exists(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name).exists()
}

// ------------------------------------------------------------ Value/Array

// The seed program's literal, not an approximation of PI.
#[allow(clippy::approx_constant)]
fn seed_child((num, arr): (Value<f64>, Array<i32>)) {
    num.set(3.1415927).unwrap();
    for x in arr.get_lock().unwrap().iter_mut() {
        *x = -*x;
    }
}

fn seed(fork: bool) -> Result<(), String> {
    let num = Value::new(0.0f64).map_err(err)?;
    let arr = Array::from_iter(0..10).map_err(err)?;
    let mut p = start(seed_child, (num.clone(), arr.clone()), fork)?;
    join(&mut p)?;
    let printed = format!("{}\n{:?}", num.get().unwrap(), arr.to_vec().unwrap());
    ensure(
        printed == "3.1415927\n[0, -1, -2, -3, -4, -5, -6, -7, -8, -9]",
        printed,
    )
}

#[test]
fn value_and_array_seed_program() {
    both(seed);
}

fn raw_child((v, a): (RawValue<u64>, RawArray<f32>)) -> f32 {
    v.set(v.get() * 2);
    let total: f32 = a.to_vec().iter().sum();
    a.set(0, total).unwrap();
    total
}

fn raw_values(fork: bool) -> Result<(), String> {
    let v = RawValue::new(21u64).map_err(err)?;
    let a = RawArray::from_slice(&[1.0f32, 2.0, 3.5]).map_err(err)?;
    let mut p = start(raw_child, (v.clone(), a.clone()), fork)?;
    ensure(join(&mut p)? == 6.5, "child sum")?;
    ensure(v.get() == 42, format!("value {}", v.get()))?;
    ensure(a.to_vec() == [6.5, 2.0, 3.5], format!("{:?}", a.to_vec()))
}

#[test]
fn raw_value_and_array_in_children() {
    both(raw_values);
}

const ROUNDS: u32 = 4000;

fn bump(a: Array<u32>) {
    for i in 0..ROUNDS {
        a.fetch_add(i as usize % a.len(), 1).unwrap();
    }
}

fn array_atomics(fork: bool) -> Result<(), String> {
    let a = Array::<u32>::new(4).map_err(err)?;
    let mut ps = Vec::new();
    for _ in 0..3 {
        ps.push(start(bump, a.clone(), fork)?);
    }
    for p in &mut ps {
        join(p)?;
    }
    let v = a.to_vec().unwrap();
    ensure(v == [3 * ROUNDS / 4; 4], format!("{v:?}"))
}

#[test]
fn array_atomic_counters_are_exact() {
    both(array_atomics);
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
struct Particle {
    pos: [f32; 3],
    id: u32,
    alive: bool,
}
// SAFETY: floats, an integer and a bool (written only through typed
// handles); no pointers.
unsafe impl Plain for Particle {}

fn move_particles(a: Array<Particle>) {
    for p in a.get_lock().unwrap().iter_mut() {
        p.pos[0] += 1.0;
        p.alive = !p.alive;
    }
}

#[test]
fn arrays_of_structs_and_errors() {
    watchdog(Duration::from_secs(60), || {
        let ps: Vec<Particle> = (0..5)
            .map(|i| Particle {
                pos: [i as f32, 0.0, 0.0],
                id: i,
                alive: i % 2 == 0,
            })
            .collect();
        let a = Array::from_slice(&ps).unwrap();
        let mut p = start(move_particles, a.clone(), false).unwrap();
        join(&mut p).unwrap();
        let got = a.to_vec().unwrap();
        for (g, p) in got.iter().zip(&ps) {
            assert_eq!(g.pos[0], p.pos[0] + 1.0);
            assert_eq!(g.alive, !p.alive);
            assert_eq!(g.id, p.id);
        }
        assert!(matches!(
            a.get(5),
            Err(ArrayError::Index(IndexError { index: 5, len: 5 }))
        ));
        assert!(matches!(
            a.copy_from_slice(&ps[..2]),
            Err(ArrayError::Length {
                expected: 5,
                got: 2
            })
        ));
        a.set(4, ps[0]).unwrap();
        assert_eq!(a.get(4).unwrap(), ps[0]);

        let empty = Array::<u64>::new(0).unwrap();
        assert!(empty.is_empty() && empty.to_vec().unwrap().is_empty());
        let raw = RawArray::<i16>::new(3).unwrap();
        assert_eq!(raw.set(3, 1), Err(IndexError { index: 3, len: 3 }));
        assert_eq!(raw.get(3), None);
        assert_eq!(raw.fetch_add(2, -4).unwrap(), 0);
        assert_eq!(raw.to_vec(), [0, 0, -4]);
        let c = Value::new(10i32).unwrap();
        assert_eq!(c.compare_exchange(10, 11), Ok(10));
        assert_eq!(c.compare_exchange(10, 12), Err(11));
        assert_eq!(c.swap(1), 11);
        assert_eq!(c.fetch_sub(2), 1);
        assert_eq!(c.get().unwrap(), -1);
    });
}

#[test]
fn whole_slice_sum_under_one_lock() {
    watchdog(Duration::from_secs(60), || {
        let n = 1_000_000;
        let a = Array::<f64>::new(n).unwrap();
        {
            let mut g = a.get_lock().unwrap();
            for (i, x) in g.iter_mut().enumerate() {
                *x = i as f64;
            }
        }
        let sum: f64 = a.get_lock().unwrap().iter().sum();
        assert_eq!(sum, (n as f64 - 1.0) * n as f64 / 2.0);
    });
}

// ------------------------------------------------------- SharedMemory

fn attach_and_write((name, byte): (String, u8)) -> usize {
    let shm = SharedMemory::attach(&name).unwrap();
    shm.write_at(0, &[byte; 8]).unwrap();
    assert!(!shm.is_owner());
    shm.size()
}

fn attach_and_hang((name, ev): (String, Event)) {
    let _shm = SharedMemory::attach(&name).unwrap();
    ev.set();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn write_through_handle(shm: SharedMemory) -> bool {
    shm.write_at(8, b"handle").unwrap();
    shm.is_owner()
}

fn attachers_never_destroy(fork: bool) -> Result<(), String> {
    let name = unique("attach");
    let shm = SharedMemory::create(&name, 100).map_err(err)?;
    ensure(shm.is_owner() && shm.size() == 100, "creator state")?;
    let mode = std::fs::metadata(format!("/dev/shm/{name}"))
        .map_err(err)?
        .permissions()
        .mode();
    ensure(mode & 0o777 == 0o600, format!("mode {mode:o}"))?;

    // Attaches by name, writes, exits normally.
    let mut p = start(attach_and_write, (name.clone(), 7u8), fork)?;
    ensure(join(&mut p)? == 100, "size seen by the attacher")?;
    let mut buf = [0u8; 8];
    shm.read_at(0, &mut buf).map_err(err)?;
    ensure(buf == [7; 8], "attacher's write")?;
    ensure(exists(&name), "an attacher's exit removed the segment")?;

    // Attaches, then is SIGKILLed.
    let ev = Event::new().map_err(err)?;
    let mut p = start(attach_and_hang, (name.clone(), ev.clone()), fork)?;
    ensure(ev.wait_timeout(LONG), "attacher never attached")?;
    p.kill().map_err(err)?;
    let _ = p.join_timeout(LONG);
    ensure(exists(&name), "a killed attacher removed the segment")?;

    // Receives the handle itself.
    let mut p = start(write_through_handle, shm.clone(), fork)?;
    ensure(!join(&mut p)?, "a received handle claims ownership")?;
    let mut buf = [0u8; 6];
    shm.read_at(8, &mut buf).map_err(err)?;
    ensure(&buf == b"handle", "write through a received handle")?;
    ensure(exists(&name), "a receiver's exit removed the segment")?;

    // An attacher here, dropped: still there. The creator's drop: gone.
    drop(SharedMemory::attach(&name).map_err(err)?);
    ensure(exists(&name), "dropping an attacher removed the segment")?;
    let keep = shm.clone();
    drop(shm);
    ensure(exists(&name), "a clone still lives")?;
    keep.close();
    ensure(!exists(&name), "the creator's last handle kept the name")?;
    Ok(())
}

#[test]
fn attachers_never_destroy_the_segment() {
    let _one_at_a_time = serial();
    both(attachers_never_destroy);
}

fn create_and_die((names, ev): (Vec<String>, Event)) {
    let segments: Vec<SharedMemory> = names
        .iter()
        .map(|n| SharedMemory::create(n, 64).unwrap())
        .collect();
    for s in &segments {
        s.write_at(0, b"orphan").unwrap();
    }
    ev.set();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn create_and_persist(name: String) {
    let shm = SharedMemory::create(&name, 32).unwrap();
    shm.write_at(0, b"kept").unwrap();
    shm.persist().unwrap();
}

/// Starts a child that creates `names`, then kills it.
fn crash_creating(names: &[String], fork: bool) -> Result<(), String> {
    let ev = Event::new().map_err(err)?;
    let mut p = start(create_and_die, (names.to_vec(), ev.clone()), fork)?;
    ensure(ev.wait_timeout(LONG), "creator never created")?;
    p.kill().map_err(err)?;
    let _ = p.join_timeout(LONG);
    Ok(())
}

fn crashed_creator(fork: bool) -> Result<(), String> {
    let (a, b, c) = (unique("crash-a"), unique("crash-b"), unique("crash-c"));
    crash_creating(&[a.clone(), b.clone()], fork)?;
    // Left behind by the crash, still readable...
    ensure(exists(&a) && exists(&b), "segments vanished with the crash")?;
    let orphan = SharedMemory::attach(&a).map_err(err)?;
    let mut buf = [0u8; 6];
    orphan.read_at(0, &mut buf).map_err(err)?;
    ensure(&buf == b"orphan", "orphan contents")?;
    drop(orphan);
    ensure(exists(&a), "attaching to a stale segment removed it")?;
    // ...and swept.
    let removed = SharedMemory::cleanup_stale().map_err(err)?;
    ensure(
        removed.contains(&a) && removed.contains(&b),
        format!("sweep removed {removed:?}"),
    )?;
    ensure(
        !exists(&a) && !exists(&b),
        "stale segments survived the sweep",
    )?;

    // A crashed creator's name is free for the next `create`.
    crash_creating(std::slice::from_ref(&c), fork)?;
    ensure(exists(&c), "segment vanished with the crash")?;
    let fresh = SharedMemory::create(&c, 16).map_err(err)?;
    ensure(fresh.is_owner() && fresh.size() == 16, "fresh segment")?;
    let mut buf = [1u8; 6];
    fresh.read_at(0, &mut buf).map_err(err)?;
    ensure(buf == [0; 6], "the new segment is not a fresh one")?;
    // A live creator's segment is neither swept nor taken.
    let removed = SharedMemory::cleanup_stale().map_err(err)?;
    ensure(
        !removed.contains(&c) && exists(&c),
        "swept a live creator's segment",
    )?;
    ensure(
        matches!(SharedMemory::create(&c, 16), Err(ShmError::Exists(_))),
        "created over a live creator",
    )?;
    drop(fresh);
    ensure(!exists(&c), "creator drop")?;

    // A persisted segment outlives its creator and every sweep.
    let d = unique("persist");
    let mut p = start(create_and_persist, d.clone(), fork)?;
    join(&mut p)?;
    let _ = SharedMemory::cleanup_stale().map_err(err)?;
    ensure(exists(&d), "persisted segment removed")?;
    let kept = SharedMemory::attach(&d).map_err(err)?;
    let mut buf = [0u8; 4];
    kept.read_at(0, &mut buf).map_err(err)?;
    ensure(&buf == b"kept", "persisted contents")?;
    kept.unlink().map_err(err)?;
    ensure(!exists(&d), "unlink")
}

#[test]
fn crashed_creators_segments_are_reclaimed() {
    let _one_at_a_time = serial();
    both(crashed_creator);
}

#[test]
fn foreign_segments_are_attached_but_never_reclaimed() {
    let _one_at_a_time = serial();
    watchdog(Duration::from_secs(60), || {
        let name = unique("foreign");
        std::fs::write(format!("/dev/shm/{name}"), [5u8; 100]).unwrap();
        let shm = SharedMemory::attach(&name).unwrap();
        assert_eq!(shm.size(), 100);
        let mut b = [0u8; 3];
        shm.read_at(97, &mut b).unwrap();
        assert_eq!(b, [5; 3]);
        SharedMemory::cleanup_stale().unwrap();
        assert!(exists(&name));
        drop(shm);
        assert!(exists(&name));
        SharedMemory::attach(&name).unwrap().unlink().unwrap();
        assert!(!exists(&name));
    });
}

#[test]
fn shared_memory_bad_input() {
    let _one_at_a_time = serial();
    watchdog(Duration::from_secs(60), || {
        for bad in ["", "/", "a/b", "..", &"x".repeat(300)] {
            assert!(
                matches!(SharedMemory::create(bad, 8), Err(ShmError::InvalidName(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            SharedMemory::create(&unique("zero"), 0),
            Err(ShmError::ZeroSize)
        ));
        assert!(matches!(
            SharedMemory::attach(&unique("missing")),
            Err(ShmError::NotFound(_))
        ));
        let shm = SharedMemory::new(10).unwrap();
        let slash = SharedMemory::attach(&format!("/{}", shm.name())).unwrap();
        assert_eq!(slash.size(), 10);
        assert!(matches!(
            shm.write_at(8, b"abc"),
            Err(ShmError::OutOfBounds(IndexError { index: 11, len: 10 }))
        ));
        assert!(shm.read_at(usize::MAX, &mut [0u8; 2]).is_err());
        shm.write_at(7, b"abc").unwrap();
        // SAFETY: no other thread or process writes this segment now.
        assert_eq!(&unsafe { slash.buf() }[7..], b"abc");
    });
}
