//! `ShareableList` against real CPython (`python3`, 3.11+ layout), damaged
//! segments, and `SharedMemoryManager` across real processes and a real
//! SIGKILL of its owner, with both start methods. Every test runs under a
//! watchdog.
//!
//! Python 3.11's resource tracker removes segments a process merely
//! attached to when it exits; the Python scripts here unregister what they
//! attach, as a program sharing segments with this crate must.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{LIMIT, LONG, both, ensure, eventually, join, start, wait_gone, watchdog};
use multiproc::*;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn exists(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name).exists()
}

/// Runs `python3 -c script args…`; its stdout, or a panic with its stderr.
fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 must be installed to run these tests");
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 from python")
}

fn sample() -> Vec<ShareableItem> {
    vec![
        ShareableItem::Int(-7),
        ShareableItem::Float(2.5),
        ShareableItem::Bool(true),
        "héllo wörld".into(),
        b"\x00ab".to_vec().into(),
        ShareableItem::None,
        ShareableItem::Int(i64::MAX),
    ]
}

const PY_ATTACH: &str = r#"
import sys
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import ShareableList
sl = ShareableList(name=sys.argv[1])
resource_tracker.unregister(sl.shm._name, "shared_memory")
print(repr(list(sl)))
print(sl.format)
sl[0] = "py"
sl[1] = None
sl[2] = 12345
sl[3] = "short"
sl[4] = b"xyz"
sl[5] = 0.25
try:
    sl[3] = "x" * 100
    print("no error")
except ValueError:
    print("ValueError")
sl.shm.close()
"#;

#[test]
fn rust_creates_python_reads_and_writes() {
    watchdog(LIMIT, || {
        let list = ShareableList::new(sample()).unwrap();
        let mode = std::fs::metadata(std::path::Path::new("/dev/shm").join(list.name()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let format = list.format_string().unwrap();
        let out = python(PY_ATTACH, &[list.name()]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "[-7, 2.5, True, 'héllo wörld', b'\\x00ab', None, 9223372036854775807]"
        );
        assert_eq!(lines[1], format);
        assert_eq!(lines[1], "qdxxxxxxx?16s8sxxxxxx?xq");
        assert_eq!(lines[2], "ValueError");
        assert_eq!(
            list.to_vec().unwrap(),
            [
                "py".into(),
                ShareableItem::None,
                ShareableItem::Int(12345),
                "short".into(),
                b"xyz".to_vec().into(),
                ShareableItem::Float(0.25),
                ShareableItem::Int(i64::MAX),
            ]
        );
        // Python's attach left the segment alone (and it stays after).
        assert!(exists(list.name()));
        let name = list.name().to_string();
        drop(list);
        assert!(!exists(&name));
    })
}

const PY_CREATE: &str = r#"
import sys
from multiprocessing.shared_memory import ShareableList
sl = ShareableList([42, -1.5, False, "naïve", b"raw\x01", None, "padding.."])
print(sl.shm.name, flush=True)
sys.stdin.readline()
print(repr(list(sl)), flush=True)
sl.shm.close()
sl.shm.unlink()
"#;

#[test]
fn python_creates_rust_reads_and_writes() {
    watchdog(LIMIT, || {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(PY_CREATE)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 must be installed to run these tests");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut name = String::new();
        out.read_line(&mut name).unwrap();
        let name = name.trim().to_string();
        let list = ShareableList::open(&name).unwrap();
        assert_eq!(list.len(), 7);
        assert_eq!(
            list.to_vec().unwrap(),
            [
                ShareableItem::Int(42),
                ShareableItem::Float(-1.5),
                ShareableItem::Bool(false),
                "naïve".into(),
                b"raw\x01".to_vec().into(),
                ShareableItem::None,
                "padding..".into(),
            ]
        );
        assert_eq!(list.count(&ShareableItem::None).unwrap(), 1);
        assert_eq!(list.index(&"naïve".into()).unwrap(), Some(3));
        list.set(0, "from rust".into()).unwrap_err();
        list.set(0, "rust!".into()).unwrap();
        list.set(1, ShareableItem::Bool(true)).unwrap();
        list.set(2, ShareableItem::Int(-3)).unwrap();
        list.set(3, b"\xffbytes".to_vec().into()).unwrap();
        list.set(5, ShareableItem::Float(1e300)).unwrap();
        list.set(6, "sixteen bytes!!!".into()).unwrap();
        assert!(matches!(
            list.set(6, "seventeen bytes!!".into()),
            Err(ShareableListError::TooLong {
                index: 6,
                capacity: 16,
                ..
            })
        ));
        drop(list); // attached: the segment stays for Python
        child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
        let mut seen = String::new();
        out.read_line(&mut seen).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(
            seen.trim(),
            "['rust!', True, -3, b'\\xffbytes', b'raw\\x01', 1e+300, 'sixteen bytes!!!']"
        );
        assert!(!exists(&name));
    })
}

/// A fresh segment holding `bytes`, opened as a list.
fn open_bytes(bytes: &[u8]) -> Result<ShareableList, ShareableListError> {
    let shm = SharedMemory::new(bytes.len().max(1)).unwrap();
    shm.write_at(0, bytes).unwrap();
    ShareableList::from_shm(shm)
}

#[test]
fn damaged_segments_are_errors() {
    watchdog(LIMIT, || {
        let good = ShareableList::new(sample()).unwrap();
        let mut image = vec![0u8; good.shm().size()];
        good.shm().read_at(0, &mut image).unwrap();
        // Every truncation: an error at opening or, if the header still
        // fits, at reading; never a panic.
        for cut in 0..image.len() {
            if let Ok(l) = open_bytes(&image[..cut]) {
                for i in 0..l.len() {
                    let _ = l.get(i);
                }
            }
        }
        let corrupt = |r: Result<ShareableList, ShareableListError>| {
            matches!(r, Err(ShareableListError::Corrupt(_)))
        };
        // Counts that do not fit, negative, huge.
        for n in [-1i64, 1 << 40, i64::MAX, 1000] {
            let mut b = image.clone();
            b[..8].copy_from_slice(&n.to_ne_bytes());
            assert!(corrupt(open_bytes(&b)), "count {n}");
        }
        // Offsets going backwards, or a slot under 8 bytes.
        let mut b = image.clone();
        b[16..24].copy_from_slice(&4i64.to_ne_bytes());
        assert!(corrupt(open_bytes(&b)));
        let mut b = image.clone();
        b[24..32].copy_from_slice(&(-8i64).to_ne_bytes());
        assert!(corrupt(open_bytes(&b)));
        // A bad format, kind, or string.
        let n = sample().len();
        let data_end = 8 * (n + 2)
            + usize::try_from(i64::from_ne_bytes(
                image[8 * (n + 1)..8 * (n + 2)].try_into().unwrap(),
            ))
            .unwrap();
        let l = ShareableList::new(sample()).unwrap();
        l.shm().write_at(data_end, b"zz\0\0\0\0\0\0").unwrap();
        assert!(matches!(l.get(0), Err(ShareableListError::Corrupt(_))));
        l.shm().write_at(data_end + 8 * 3, b"999999s\0").unwrap();
        assert!(matches!(l.get(3), Err(ShareableListError::Corrupt(_))));
        l.shm().write_at(data_end + 8 * n + 1, &[7]).unwrap();
        assert!(matches!(l.get(1), Err(ShareableListError::Corrupt(_))));
        let str_at = 8 * (n + 2) + 24;
        l.shm().write_at(str_at, b"\xff\xfe").unwrap();
        assert!(matches!(
            ShareableList::open(l.name()).unwrap().get(3),
            Err(ShareableListError::Corrupt(_) | ShareableListError::Utf8 { index: 3 })
        ));
        assert!(l.to_string().contains("<error>"));
        // Random contents: errors or values, never a panic or a hang.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..300 {
            let len = 8 + round % 200;
            let mut b: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            b[..8].copy_from_slice(&((round % 5) as i64).to_ne_bytes());
            if let Ok(l) = open_bytes(&b) {
                for i in 0..l.len() {
                    let _ = l.get(i);
                    let _ = l.set(i, "abc".into());
                }
            }
        }
        // Not found, and a bad name.
        assert!(matches!(
            ShareableList::open("mptest-no-such-list"),
            Err(ShareableListError::Shm(ShmError::NotFound(_)))
        ));
        assert!(ShareableList::open("a/b").is_err());
        // An item too large for Python's format.
        assert!(matches!(
            ShareableList::new(vec![ShareableItem::None, vec![0u8; 10_000_000].into()]),
            Err(ShareableListError::ItemTooLarge { index: 1, .. })
        ));
    })
}

fn child_edits(list: ShareableList) -> String {
    list.set(0, "child".into()).unwrap();
    list.set(1, ShareableItem::Int(99)).unwrap();
    list.get(3).unwrap().to_string()
}

fn list_in_child(fork: bool) -> Result<(), String> {
    let list = ShareableList::new(sample()).map_err(err)?;
    let mut p = start(child_edits, list.clone(), fork)?;
    let seen = join(&mut p)?;
    ensure(seen == "'héllo wörld'", format!("child saw {seen}"))?;
    ensure(
        list.get(0).map_err(err)? == "child".into() && list.get(1).map_err(err)? == 99.into(),
        "the child's writes are not visible",
    )?;
    let name = list.name().to_string();
    drop(list);
    ensure(!exists(&name), "the creator's drop left the segment")
}

#[test]
fn a_list_travels_to_a_child() {
    both(list_in_child);
}

// ------------------------------------------------------- SharedMemoryManager

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<ShareableList>();
    check::<SharedMemoryManager>();
    check::<ShareableItem>();
}

#[test]
fn manager_removes_its_segments_at_shutdown() {
    watchdog(LIMIT, || {
        let mut smm = SharedMemoryManager::start().unwrap();
        let pid = smm.pid().unwrap();
        let shm = smm.shared_memory(4096).unwrap();
        shm.write_at(0, b"abc").unwrap();
        let list = smm.shareable_list(sample()).unwrap();
        assert!(!shm.is_owner());
        let names = vec![shm.name().to_string(), list.name().to_string()];
        let mut held = smm.segment_names().unwrap();
        held.sort();
        let mut want = names.clone();
        want.sort();
        assert_eq!(held, want);
        drop((shm, list));
        assert!(names.iter().all(|n| exists(n)));
        // From several threads at once.
        let smm_ref = &smm;
        let more: Vec<String> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|i| s.spawn(move || smm_ref.shared_memory(10 + i).unwrap().name().to_string()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(smm.segment_names().unwrap().len(), 6);
        // Python reads a managed list too.
        let list = ShareableList::open(&names[1]).unwrap();
        assert!(python(PY_ATTACH, &[&names[1]]).contains("ValueError"));
        assert_eq!(list.get(0).unwrap(), "py".into());
        assert!(matches!(smm.shared_memory(0), Err(ShmError::ZeroSize)));
        smm.shutdown().unwrap();
        assert!(names.iter().chain(&more).all(|n| !exists(n)));
        assert!(wait_gone(pid, LONG));
        assert!(matches!(smm.shared_memory(8), Err(ShmError::Manager(_))));
    })
}

/// The owner: starts a manager, makes segments, reports their names and
/// the tracker's pid, then waits to be killed (or, with `forget`, leaks
/// the manager and returns, so that only the process's exit is left to
/// clean up).
fn owner((report, forget): (Connection, bool)) {
    let smm = SharedMemoryManager::start().unwrap();
    let a = smm.shared_memory(100).unwrap();
    let b = smm
        .shareable_list(vec![ShareableItem::Int(1), "x".into()])
        .unwrap();
    report
        .send(&(vec![a.name().to_string(), b.name().to_string()], smm.pid()))
        .unwrap();
    if forget {
        assert_eq!(ShareableList::open(b.name()).unwrap().len(), 2);
        std::mem::forget(smm);
        return;
    }
    std::thread::sleep(Duration::from_secs(600));
}

fn owner_dies(fork: bool, forget: bool) -> Result<(), String> {
    let (ours, theirs) = pipe().map_err(err)?;
    let mut p = start(owner, (theirs, forget), fork)?;
    let (names, tracker): (Vec<String>, Option<i32>) = ours.recv_timeout(LONG).map_err(err)?;
    let tracker = tracker.ok_or("no tracker pid")?;
    if !forget {
        // (A forgetting owner may be gone, its segments too, already.)
        ensure(names.iter().all(|n| exists(n)), "segments missing")?;
        p.kill().map_err(err)?;
    }
    let _ = p.join_timeout(LONG);
    ensure(
        eventually(LONG, || names.iter().all(|n| !exists(n))),
        format!("segments {names:?} left after the owner died"),
    )?;
    ensure(wait_gone(tracker, LONG), "the tracker outlived its owner")
}

fn owner_sigkilled(fork: bool) -> Result<(), String> {
    owner_dies(fork, false)
}

fn owner_exits_without_shutdown(fork: bool) -> Result<(), String> {
    owner_dies(fork, true)
}

#[test]
fn manager_cleans_up_when_its_owner_is_sigkilled() {
    both(owner_sigkilled);
}

#[test]
fn manager_cleans_up_when_its_owner_exits_without_shutdown() {
    both(owner_exits_without_shutdown);
}

#[test]
fn a_sigkilled_tracker_leaves_stale_segments_that_are_reclaimed() {
    watchdog(LIMIT, || {
        let smm = SharedMemoryManager::start().unwrap();
        let name = smm.shared_memory(64).unwrap().name().to_string();
        let pid = smm.pid().unwrap();
        // SAFETY: `pid` is this test's own child (the tracker), alive
        // until the signal: nothing else reaps it.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        assert!(wait_gone(pid, LONG));
        // The tracker created the segment, so it is stale now: removed by
        // this sweep (or by a `create` of a test running beside this one).
        SharedMemory::cleanup_stale().unwrap();
        assert!(!exists(&name));
        drop(smm);
    })
}
