//! Every public timeout of the crate, walked with `Duration::MAX` and
//! `Duration::ZERO`.
//!
//! The crate's rule: a timeout too long to represent means no limit. So
//! `Duration::MAX` with the item there returns the item (never a panic, never
//! an overflow error), and `Duration::ZERO` returns at once: the item if it is
//! there, the call's timeout error if not. The manager's calls cross to its
//! server, where a panic would kill a server thread; each manager case checks
//! that the server still answers afterwards.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use common::{LIMIT, Method, watchdog};
use multiproc::csp::{Alternation, Channel, ChannelError};
use multiproc::{
    Array, Barrier, BarrierError, BoundedSemaphore, Client, Condition, ConnectError, Event,
    GetTimeoutError, JoinError, JoinableQueue, Listener, Lock, LockError, Manager, ManagerError,
    Pool, PoolError, Process, PutTimeoutError, Queue, QueueBuilder, RLock, RecvError, Semaphore,
    SimpleQueue, Value,
};

const MAX: Duration = Duration::MAX;
const ZERO: Duration = Duration::ZERO;

/// Runs `notify` every few milliseconds on another thread until the
/// returned guard is dropped: wakes a waiter whenever it starts waiting.
struct Nudger {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Nudger {
    fn new(notify: impl Fn() + Send + 'static) -> Nudger {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                notify();
                thread::sleep(Duration::from_millis(5));
            }
        });
        Nudger {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Nudger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

// ------------------------------------------------------------------ queues

#[test]
fn queue_timeouts() {
    watchdog(LIMIT, || {
        let q = Queue::<u32>::with_maxsize(1).unwrap();
        assert!(matches!(q.get_timeout(ZERO), Err(GetTimeoutError::Timeout)));
        q.put_timeout(1, MAX).unwrap();
        assert!(matches!(
            q.put_timeout(2, ZERO),
            Err(PutTimeoutError::Timeout(2))
        ));
        assert_eq!(q.get_timeout(MAX).unwrap(), 1);
        q.put_timeout(3, ZERO).unwrap();
        assert_eq!(q.get_timeout(ZERO).unwrap(), 3);

        // The bytes family.
        let b = Queue::<()>::with_maxsize(1).unwrap();
        assert!(matches!(
            b.get_bytes_timeout(ZERO),
            Err(GetTimeoutError::Timeout)
        ));
        b.put_bytes_timeout(b"max", MAX).unwrap();
        assert!(matches!(
            b.put_bytes_timeout(b"full", ZERO),
            Err(PutTimeoutError::Timeout(()))
        ));
        assert_eq!(b.get_bytes_timeout(MAX).unwrap(), b"max");
        b.put_bytes_timeout(b"zero", ZERO).unwrap();
        assert_eq!(b.get_bytes_timeout(ZERO).unwrap(), b"zero");
        let mut buf = Vec::new();
        assert!(matches!(
            b.get_bytes_into(&mut buf, Some(ZERO)),
            Err(GetTimeoutError::Timeout)
        ));
        b.put_bytes(b"into").unwrap();
        assert_eq!(b.get_bytes_into(&mut buf, Some(MAX)).unwrap(), 4);
        assert_eq!(buf, b"into");
        b.put_bytes(b"into0").unwrap();
        assert_eq!(b.get_bytes_into(&mut buf, Some(ZERO)).unwrap(), 5);
        assert!(matches!(
            b.get_bytes_with(Some(ZERO), |s| s.len()),
            Err(GetTimeoutError::Timeout)
        ));
        b.put_bytes(b"with").unwrap();
        assert_eq!(
            b.get_bytes_with(Some(MAX), |s| s.to_vec()).unwrap(),
            b"with"
        );
        b.put_bytes(b"with0").unwrap();
        assert_eq!(b.get_bytes_with(Some(ZERO), |s| s.len()).unwrap(), 5);

        // A waiter with no limit is woken by a later put.
        let q2 = q.clone();
        let t = thread::spawn(move || q2.get_timeout(MAX).unwrap());
        thread::sleep(Duration::from_millis(20));
        q.put(7).unwrap();
        assert_eq!(t.join().unwrap(), 7);

        let s = SimpleQueue::<u32>::new().unwrap();
        assert!(matches!(s.get_timeout(ZERO), Err(GetTimeoutError::Timeout)));
        s.put(4).unwrap();
        assert_eq!(s.get_timeout(MAX).unwrap(), 4);
        s.put(5).unwrap();
        assert_eq!(s.get_timeout(ZERO).unwrap(), 5);

        let j = JoinableQueue::<u32>::new().unwrap();
        j.join_timeout(MAX).unwrap();
        j.join_timeout(ZERO).unwrap();
        j.put(1).unwrap();
        let pending = j.join_timeout(ZERO).unwrap_err();
        assert_eq!(pending.unfinished, 1);
        assert_eq!(j.get_timeout(MAX).unwrap(), 1);
        j.task_done().unwrap();
        j.join_timeout(MAX).unwrap();

        let built = QueueBuilder::new().maxsize(1).build::<u8>().unwrap();
        built.put_timeout(9, MAX).unwrap();
        assert_eq!(built.get_timeout(MAX).unwrap(), 9);
    });
}

// ----------------------------------------------------- sync and shared memory

/// `Ok` unless it is a timeout; for "the lock was free" checks.
fn free<G>(r: Result<G, LockError<G>>) -> bool {
    r.is_ok()
}

fn timed_out<G>(r: Result<G, LockError<G>>) -> bool {
    matches!(r, Err(LockError::Timeout))
}

#[test]
fn sync_and_shm_timeouts() {
    watchdog(LIMIT, || {
        let lock = Lock::new().unwrap();
        let rlock = RLock::new().unwrap();
        let cond = Condition::new().unwrap();
        let value = Value::new(5u64).unwrap();
        let array = Array::<u32>::new(3).unwrap();
        {
            let _l = lock.acquire_timeout(MAX).unwrap();
            let _r = rlock.acquire_timeout(MAX).unwrap();
            let _c = cond.acquire_timeout(MAX).unwrap();
            let v = value.lock_timeout(MAX).unwrap();
            assert_eq!(*v, 5);
            let a = array.lock_timeout(MAX).unwrap();
            assert_eq!(a.len(), 3);
            // Held here: another thread times out at once with ZERO.
            thread::scope(|s| {
                s.spawn(|| {
                    assert!(timed_out(lock.acquire_timeout(ZERO)));
                    assert!(timed_out(rlock.acquire_timeout(ZERO)));
                    assert!(timed_out(cond.acquire_timeout(ZERO)));
                    assert!(timed_out(value.lock_timeout(ZERO)));
                    assert!(timed_out(array.lock_timeout(ZERO)));
                });
            });
        }
        // Free: ZERO takes it at once.
        assert!(free(lock.acquire_timeout(ZERO)));
        assert!(free(rlock.acquire_timeout(ZERO)));
        assert!(free(cond.acquire_timeout(ZERO)));
        assert!(free(value.lock_timeout(ZERO)));
        assert!(free(array.lock_timeout(ZERO)));

        let sem = Semaphore::new(1).unwrap();
        let bsem = BoundedSemaphore::new(1).unwrap();
        assert!(sem.acquire_timeout(MAX));
        assert!(bsem.acquire_timeout(MAX));
        assert!(!sem.acquire_timeout(ZERO));
        assert!(!bsem.acquire_timeout(ZERO));
        sem.release().unwrap();
        bsem.release().unwrap();
        assert!(sem.acquire_timeout(ZERO));
        assert!(bsem.acquire_timeout(ZERO));

        let ev = Event::new().unwrap();
        assert!(!ev.wait_timeout(ZERO));
        ev.set();
        assert!(ev.wait_timeout(MAX));
        assert!(ev.wait_timeout(ZERO));

        let one = Barrier::new(1).unwrap();
        assert_eq!(one.wait_timeout(MAX).unwrap(), 0);
        assert_eq!(one.wait_timeout(ZERO).unwrap(), 0);
        let two = Barrier::new(2).unwrap();
        assert!(matches!(two.wait_timeout(ZERO), Err(BarrierError::Timeout)));
        two.reset().unwrap();
        let other = two.clone();
        let t = thread::spawn(move || other.wait_timeout(MAX).unwrap());
        let mine = two.wait_timeout(MAX).unwrap();
        let theirs = t.join().unwrap();
        assert_eq!(mine + theirs, 1);

        // Condition waits: nothing notifies, so ZERO times out at once; a
        // notifier wakes a waiter with no limit.
        let cond = Arc::new(Condition::new().unwrap());
        {
            let mut g = cond.acquire().unwrap();
            assert!(!g.wait_timeout(ZERO).unwrap());
            assert!(!g.wait_for_timeout(|| false, ZERO).unwrap());
            assert!(g.wait_for_timeout(|| true, MAX).unwrap());
            assert!(g.wait_for_timeout(|| true, ZERO).unwrap());
        }
        let flag = Arc::new(AtomicBool::new(false));
        let (c, f) = (cond.clone(), flag.clone());
        let nudger = Nudger::new(move || {
            let g = c.acquire().unwrap();
            f.store(true, Ordering::SeqCst);
            g.notify_all();
        });
        {
            let mut g = cond.acquire().unwrap();
            assert!(g.wait_timeout(MAX).unwrap());
            assert!(
                g.wait_for_timeout(|| flag.load(Ordering::SeqCst), MAX)
                    .unwrap()
            );
        }
        drop(nudger);
    });
}

// ------------------------------------------------------------- connections

#[test]
fn connection_timeouts() {
    watchdog(LIMIT, || {
        let (a, b) = multiproc::pipe().unwrap();
        assert!(matches!(
            a.recv_timeout::<u32>(ZERO),
            Err(RecvError::Timeout)
        ));
        assert!(matches!(
            a.recv_bytes_timeout(ZERO),
            Err(RecvError::Timeout)
        ));
        assert!(!a.poll(ZERO).unwrap());
        assert!(multiproc::wait(&[&a], Some(ZERO)).unwrap().is_empty());
        b.send(&1u32).unwrap();
        assert!(a.poll(MAX).unwrap());
        assert!(a.poll(ZERO).unwrap());
        assert_eq!(multiproc::wait(&[&a], Some(MAX)).unwrap(), vec![0]);
        assert_eq!(multiproc::wait(&[&a], Some(ZERO)).unwrap(), vec![0]);
        assert_eq!(a.recv_timeout::<u32>(MAX).unwrap(), 1);
        b.send(&2u32).unwrap();
        assert_eq!(a.recv_timeout::<u32>(ZERO).unwrap(), 2);
        b.send_bytes(b"max").unwrap();
        assert_eq!(a.recv_bytes_timeout(MAX).unwrap(), b"max");
        b.send_bytes(b"zero").unwrap();
        assert_eq!(a.recv_bytes_timeout(ZERO).unwrap(), b"zero");

        // Listener and client, keyed, with every bound at MAX.
        let key: &[u8] = b"timeouts";
        let mut listener = Listener::bind("127.0.0.1:0", Some(key)).unwrap();
        listener.set_handshake_timeout(MAX);
        assert_eq!(listener.handshake_timeout(), MAX);
        assert!(matches!(
            listener.accept_timeout(ZERO),
            Err(ConnectError::Timeout)
        ));
        let address = listener.address().clone();
        let t = thread::spawn(move || {
            let c = Client::connect_timeout(address, Some(b"timeouts"), MAX).unwrap();
            c.send(&"hello".to_string()).unwrap();
            c.recv::<u8>().unwrap()
        });
        let server = listener.accept_timeout(MAX).unwrap();
        assert_eq!(server.recv_timeout::<String>(MAX).unwrap(), "hello");
        server.send(&9u8).unwrap();
        assert_eq!(t.join().unwrap(), 9);

        // A peer already waiting: ZERO accepts it (the handshake has its
        // own bound).
        let address = listener.address().clone();
        let t = thread::spawn(move || {
            let c = Client::connect_timeout(address, Some(b"timeouts"), MAX).unwrap();
            c.recv::<u8>().unwrap()
        });
        let server = loop {
            match listener.accept_timeout(ZERO) {
                Ok(c) => break c,
                Err(ConnectError::Timeout) => thread::sleep(Duration::from_millis(2)),
                Err(e) => panic!("accept: {e}"),
            }
        };
        server.send(&3u8).unwrap();
        assert_eq!(t.join().unwrap(), 3);
        // A zero connect timeout to a live listener still connects or
        // reports a timeout; it never panics.
        let address = listener.address().clone();
        let t = thread::spawn(move || Client::connect_timeout(address, Some(b"timeouts"), ZERO));
        let _ = listener.accept_timeout(Duration::from_millis(200));
        match t.join().unwrap() {
            Ok(_) | Err(ConnectError::Timeout) | Err(ConnectError::HandshakeTimeout) => {}
            Err(e) => panic!("connect with a zero timeout: {e}"),
        }
    });
}

// --------------------------------------------------------------------- CSP

#[test]
fn csp_timeouts() {
    watchdog(LIMIT, || {
        for threads_only in [true, false] {
            let builder = Channel::builder().buffer(1);
            let builder = if threads_only {
                builder.threads_only()
            } else {
                builder
            };
            let ch: Channel<u32> = builder.build().unwrap();
            let (r, w) = (ch.reader(), ch.writer());
            assert!(matches!(r.read_timeout(ZERO), Err(ChannelError::Timeout)));
            w.write_timeout(&1, MAX).unwrap();
            assert!(matches!(
                w.write_timeout(&2, ZERO),
                Err(ChannelError::Timeout)
            ));
            assert_eq!(r.read_timeout(MAX).unwrap(), 1);
            w.write_timeout(&3, ZERO).unwrap();
            assert_eq!(r.read_timeout(ZERO).unwrap(), 3);

            // A timeout guard of MAX never fires; the input is chosen.
            w.write(&4).unwrap();
            let got = Alternation::new()
                .input(&r, Some)
                .timeout(MAX, || None)
                .select()
                .unwrap();
            assert_eq!(got, Some(4));
            // ZERO fires at once with nothing ready.
            let got = Alternation::new()
                .input(&r, Some)
                .timeout(ZERO, || None)
                .select()
                .unwrap();
            assert_eq!(got, None);
            let got = Alternation::new()
                .input(&r, |v: u32| v == 0)
                .timeout_if(true, MAX, || false)
                .timeout_if(false, ZERO, || true)
                .skip(|| true)
                .pri_select()
                .unwrap();
            assert!(got);
            // A MAX timeout guard alone with an input that arrives later.
            let w2 = w.clone();
            let t = thread::spawn(move || {
                thread::sleep(Duration::from_millis(20));
                w2.write(&5).unwrap();
            });
            let got = Alternation::new()
                .input(&r, Some)
                .timeout(MAX, || None)
                .select()
                .unwrap();
            assert_eq!(got, Some(5));
            t.join().unwrap();
        }
    });
}

// ----------------------------------------------------------------- manager

#[test]
fn manager_timeouts_never_hurt_the_server() {
    watchdog(LIMIT, || {
        let mut m = Manager::start().unwrap();
        let alive = |m: &Manager| m.list::<u8>(Vec::new()).unwrap().len().unwrap() == 0;

        let q = m.queue::<u32>(1).unwrap();
        assert!(matches!(q.get_timeout(ZERO), Err(ManagerError::Empty)));
        q.put_timeout(&1, MAX).unwrap();
        assert!(matches!(q.put_timeout(&2, ZERO), Err(ManagerError::Full)));
        assert_eq!(q.get_timeout(MAX).unwrap(), 1);
        q.put_timeout(&3, ZERO).unwrap();
        assert_eq!(q.get_timeout(ZERO).unwrap(), 3);
        assert!(alive(&m));

        let j = m.joinable_queue::<u32>(0).unwrap();
        j.join_timeout(MAX).unwrap();
        j.join_timeout(ZERO).unwrap();
        j.put(&1).unwrap();
        assert!(matches!(j.join_timeout(ZERO), Err(ManagerError::Timeout)));
        assert!(matches!(j.get_timeout(MAX), Ok(1)));
        assert!(matches!(j.get_timeout(ZERO), Err(ManagerError::Empty)));
        j.task_done().unwrap();
        j.join_timeout(MAX).unwrap();
        assert!(alive(&m));

        let lock = m.lock().unwrap();
        let rlock = m.rlock().unwrap();
        let sem = m.semaphore(1).unwrap();
        let bsem = m.bounded_semaphore(1).unwrap();
        assert!(lock.acquire_timeout(MAX).unwrap());
        assert!(rlock.acquire_timeout(MAX).unwrap());
        assert!(sem.acquire_timeout(MAX).unwrap());
        assert!(bsem.acquire_timeout(MAX).unwrap());
        assert!(!lock.acquire_timeout(ZERO).unwrap());
        assert!(!sem.acquire_timeout(ZERO).unwrap());
        assert!(!bsem.acquire_timeout(ZERO).unwrap());
        let r2 = rlock.clone();
        let other = thread::spawn(move || r2.acquire_timeout(ZERO).unwrap());
        assert!(!other.join().unwrap());
        lock.release().unwrap();
        rlock.release().unwrap();
        sem.release().unwrap();
        bsem.release().unwrap();
        assert!(lock.acquire_timeout(ZERO).unwrap());
        assert!(rlock.acquire_timeout(ZERO).unwrap());
        assert!(sem.acquire_timeout(ZERO).unwrap());
        assert!(bsem.acquire_timeout(ZERO).unwrap());
        lock.release().unwrap();
        rlock.release().unwrap();
        assert!(alive(&m));

        let ev = m.event().unwrap();
        assert!(!ev.wait_timeout(ZERO).unwrap());
        ev.set().unwrap();
        assert!(ev.wait_timeout(MAX).unwrap());
        assert!(ev.wait_timeout(ZERO).unwrap());
        assert!(alive(&m));

        let one = m.barrier(1).unwrap();
        assert_eq!(one.wait_timeout(MAX).unwrap(), 0);
        assert_eq!(one.wait_timeout(ZERO).unwrap(), 0);
        let two = m.barrier(2).unwrap();
        let other = two.clone();
        let t = thread::spawn(move || other.wait_timeout(MAX).unwrap());
        let mine = two.wait_timeout(MAX).unwrap();
        assert_eq!(mine + t.join().unwrap(), 1);
        assert!(matches!(
            m.barrier(2).unwrap().wait_timeout(ZERO),
            Err(ManagerError::Timeout) | Err(ManagerError::BrokenBarrier)
        ));
        assert!(alive(&m));

        let cond = m.condition().unwrap();
        assert!(cond.acquire_timeout(MAX).unwrap());
        assert!(!cond.wait_timeout(ZERO).unwrap());
        assert!(cond.wait_for(|| true, Some(MAX)).unwrap());
        assert!(cond.wait_for(|| true, Some(ZERO)).unwrap());
        assert!(!cond.wait_for(|| false, Some(ZERO)).unwrap());
        let flag = Arc::new(AtomicBool::new(false));
        let (c, f) = (cond.clone(), flag.clone());
        let nudger = Nudger::new(move || {
            c.acquire().unwrap();
            f.store(true, Ordering::SeqCst);
            c.notify_all().unwrap();
            c.release().unwrap();
        });
        assert!(cond.wait_timeout(MAX).unwrap());
        assert!(
            cond.wait_for(|| flag.load(Ordering::SeqCst), Some(MAX))
                .unwrap()
        );
        cond.release().unwrap();
        drop(nudger);
        assert!(alive(&m));
        m.shutdown().unwrap();
    });
}

// ------------------------------------------------------- processes and pools

fn echo(x: u32) -> u32 {
    x
}

fn sleep_then(ms: u64) -> u64 {
    thread::sleep(Duration::from_millis(ms));
    ms
}

fn processes_and_pools(method: Method) {
    let mut p = Process::new(sleep_then, 300).start_method(method.start());
    p.start().unwrap();
    assert!(matches!(p.join_timeout(ZERO), Err(JoinError::Timeout(_))));
    assert_eq!(p.join_timeout(MAX).unwrap(), 300);

    let mut p = Process::new(echo, 8).start_method(method.start());
    p.start().unwrap();
    assert_eq!(p.join_timeout(MAX).unwrap(), 8);

    let pool = Pool::builder()
        .processes(1)
        .start_method(method.start())
        .build()
        .unwrap();
    let slow = pool.apply_async(sleep_then, 300).unwrap();
    assert!(!slow.wait_timeout(ZERO));
    assert!(matches!(slow.get_timeout(ZERO), Err(PoolError::Timeout(_))));
    assert!(slow.wait_timeout(MAX));
    assert_eq!(slow.get_timeout(MAX).unwrap(), 300);
    let done = pool.apply_async(echo, 2).unwrap();
    done.wait();
    assert!(done.wait_timeout(ZERO));
    assert_eq!(done.get_timeout(ZERO).unwrap(), 2);

    let map = pool.map_async(sleep_then, [200, 1]).unwrap();
    assert!(!map.wait_timeout(ZERO));
    assert!(matches!(map.get_timeout(ZERO), Err(PoolError::Timeout(_))));
    assert!(matches!(
        map.get_results_timeout(ZERO),
        Err(PoolError::Timeout(_))
    ));
    assert!(map.wait_timeout(MAX));
    assert_eq!(map.get_timeout(MAX).unwrap(), vec![200, 1]);
    let map = pool.map_async(echo, [1, 2]).unwrap();
    assert_eq!(map.get_results_timeout(MAX).unwrap().len(), 2);
    let map = pool.map_async(echo, [3]).unwrap();
    map.wait();
    assert!(map.wait_timeout(ZERO));
    assert_eq!(map.get_timeout(ZERO).unwrap(), vec![3]);

    let _busy = pool.apply_async(sleep_then, 300).unwrap();
    pool.close();
    assert!(matches!(
        pool.join_timeout(ZERO),
        Err(PoolError::Timeout(_))
    ));
    pool.join_timeout(MAX).unwrap();
}

#[test]
fn process_and_pool_timeouts_spawn() {
    watchdog(LIMIT, || processes_and_pools(Method::Spawn));
}

#[test]
fn process_and_pool_timeouts_fork() {
    // Fork is refused in the multi-threaded test process: run the scenario
    // in a spawned child, where it is the only thread.
    watchdog(LIMIT, || {
        common::in_child(processes_and_pools, Method::Fork);
    });
}
