//! Managers across real processes: every proxy kind used from spawned and
//! forked children, atomic server-side arithmetic, nested containers,
//! batches, registered types, and reference counting across processes.

mod common;

use std::thread;
use std::time::Duration;

use common::{LONG, eventually, watchdog};
use multiproc::manager::{AnyValue, ManagerBuilder, Served, from_value};
use multiproc::{
    BarrierProxy, ConditionProxy, DictProxy, EventProxy, JoinableQueueProxy, ListProxy, LockProxy,
    Manager, ManagerError, Namespace, Process, QueueProxy, StartMethod, ValueProxy,
};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Record {
    name: String,
    score: i32,
    tags: Vec<String>,
}

fn rec(name: &str, score: i32) -> Record {
    Record {
        name: name.into(),
        score,
        tags: vec![format!("t{score}")],
    }
}

// ---- child targets -----------------------------------------------------------

fn list_worker(list: ListProxy<Record>) -> Result<Vec<Record>, String> {
    let e = |e: ManagerError| e.to_string();
    list.append(&rec("d", 4)).map_err(e)?;
    list.insert(0, &rec("z", 0)).map_err(e)?;
    list.set(1, &rec("a", 10)).map_err(e)?;
    let popped = list.pop().map_err(e)?;
    list.extend([&popped, &rec("e", 5)]).map_err(e)?;
    list.remove(&rec("e", 5)).map_err(e)?;
    list.sort().map_err(e)?;
    list.to_vec().map_err(e)
}

fn dict_worker(d: DictProxy<String, Vec<i64>>) -> Result<(), String> {
    let e = |e: ManagerError| e.to_string();
    d.insert(&"child".into(), &vec![1]).map_err(e)?;
    // A list inside the dict, reached as a live proxy: the appends stick.
    let nested = d.list_at::<i64>(&"shared".into()).map_err(e)?;
    nested.append(&7).map_err(e)?;
    nested.append(&8).map_err(e)?;
    d.remove(&"gone".into()).map_err(e)?;
    Ok(())
}

fn add_many((ns, n): (Namespace, u32)) -> Result<(), String> {
    for _ in 0..n {
        ns.add("counter", 1).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn add_value((v, d, n): (ValueProxy<i64>, DictProxy<String, f64>, u32)) -> Result<(), String> {
    for _ in 0..n {
        v.add(1).map_err(|e| e.to_string())?;
        d.add(&"f".into(), 0.5).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Increments a namespace attribute non-atomically, under a manager lock.
fn locked_increments((lock, ns, n): (LockProxy, Namespace, u32)) -> Result<(), String> {
    let e = |e: ManagerError| e.to_string();
    for _ in 0..n {
        let guard = lock.guard().map_err(e)?;
        let x: i64 = ns.get("x").map_err(e)?;
        ns.set("x", &(x + 1)).map_err(e)?;
        guard.release().map_err(e)?;
    }
    Ok(())
}

fn producer((q, n): (QueueProxy<(u32, String)>, u32)) -> Result<(), String> {
    for i in 0..n {
        q.put(&(i, format!("item {i}")))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn joinable_consumer(q: JoinableQueueProxy<u32>) -> Result<u64, String> {
    let mut sum = 0u64;
    loop {
        let x = q.get_timeout(LONG).map_err(|e| e.to_string())?;
        q.task_done().map_err(|e| e.to_string())?;
        if x == u32::MAX {
            return Ok(sum);
        }
        sum += u64::from(x);
    }
}

fn event_and_barrier((ev, barrier): (EventProxy, BarrierProxy)) -> Result<usize, String> {
    ev.wait_timeout(LONG)
        .map_err(|e| e.to_string())
        .and_then(|set| {
            if set {
                Ok(())
            } else {
                Err("event not set".into())
            }
        })?;
    barrier.wait_timeout(LONG).map_err(|e| e.to_string())
}

fn condition_waiter((cond, ns): (ConditionProxy, Namespace)) -> Result<i64, String> {
    let e = |e: ManagerError| e.to_string();
    cond.acquire().map_err(e)?;
    ns.set("waiting", &true).map_err(e)?;
    let ok = cond
        .wait_for(|| ns.get::<i64>("go").unwrap_or(0) > 0, Some(LONG))
        .map_err(e)?;
    let go = ns.get::<i64>("go").map_err(e)?;
    cond.release().map_err(e)?;
    if ok {
        Ok(go)
    } else {
        Err("condition never came true".into())
    }
}

/// Appends from a forked grandchild (this spawned child is single-threaded,
/// so fork is allowed here).
fn fork_from_spawned_child(list: ListProxy<i32>) -> Result<i32, String> {
    fn grandchild(list: ListProxy<i32>) -> i32 {
        list.append(&42).expect("append from the forked child");
        list.len().expect("len") as i32
    }
    list.append(&1).map_err(|e| e.to_string())?;
    let mut p = Process::new(grandchild, list.clone()).start_method(StartMethod::Fork);
    p.start().map_err(|e| e.to_string())?;
    let n = p.join_timeout(LONG).map_err(|e| e.to_string())?;
    // The parent's pooled connection still works after the fork.
    list.append(&2).map_err(|e| e.to_string())?;
    Ok(n)
}

struct Counter(i64);

impl Served for Counter {
    fn call(&mut self, method: &str, args: AnyValue) -> Result<AnyValue, String> {
        match method {
            "add" => {
                self.0 += from_value::<i64>(args).map_err(|e| e.to_string())?;
                Ok(AnyValue::Int(self.0.into()))
            }
            "get" => Ok(AnyValue::Int(self.0.into())),
            "fail" => Err("asked to fail".into()),
            other => Err(format!("no method {other}")),
        }
    }
}

fn new_counter(args: AnyValue) -> Result<Box<dyn Served>, String> {
    Ok(Box::new(Counter(
        from_value(args).map_err(|e| e.to_string())?,
    )))
}

fn counter_user((c, n): (multiproc::manager::RemoteObject, i64)) -> Result<i64, String> {
    for _ in 0..n {
        let _: i64 = c.call("add", &1).map_err(|e| e.to_string())?;
    }
    c.call("get", &()).map_err(|e| e.to_string())
}

fn make_and_keep(list: ListProxy<ListProxy<i32>>) -> Result<(), String> {
    let _ = list;
    Ok(())
}

fn use_after_parent_dropped(list: ListProxy<String>) -> Result<Vec<String>, String> {
    list.append(&"from child".to_string())
        .map_err(|e| e.to_string())?;
    list.to_vec().map_err(|e| e.to_string())
}

// ---- tests ------------------------------------------------------------------

#[test]
fn list_operations_from_a_child_are_seen_by_the_parent() {
    watchdog(Duration::from_secs(60), || {
        let m = Manager::start().unwrap();
        let list = m.list(vec![rec("b", 2), rec("c", 3)]).unwrap();
        let mut p = Process::new(list_worker, list.clone());
        p.start().unwrap();
        let seen_by_child = p.join_timeout(LONG).unwrap().unwrap();
        let seen_here = list.to_vec().unwrap();
        assert_eq!(seen_here, seen_by_child);
        let names: Vec<&str> = seen_here.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "c", "d", "z"]);
        assert_eq!(list.index(&rec("c", 3)).unwrap(), 1);
        assert!(list.contains(&rec("d", 4)).unwrap());
        assert!(matches!(
            list.remove(&rec("q", 9)),
            Err(ManagerError::NotFound(_))
        ));
        assert!(matches!(list.get(10), Err(ManagerError::Index(_))));
        assert_eq!(list.get(-1).unwrap(), rec("z", 0));
        list.clear().unwrap();
        assert!(list.is_empty().unwrap());
    });
}

#[test]
fn dict_operations_and_nested_list_stick() {
    watchdog(Duration::from_secs(60), || {
        let m = Manager::start().unwrap();
        let d = m
            .dict([
                ("shared".to_string(), vec![]),
                ("gone".to_string(), vec![0]),
            ])
            .unwrap();
        let mut p = Process::new(dict_worker, d.clone());
        p.start().unwrap();
        p.join_timeout(LONG).unwrap().unwrap();
        assert_eq!(d.get(&"shared".into()).unwrap(), Some(vec![7, 8]));
        assert_eq!(d.get(&"child".into()).unwrap(), Some(vec![1]));
        assert_eq!(d.get(&"gone".into()).unwrap(), None);
        assert_eq!(d.keys().unwrap(), ["shared", "child"]);
        assert_eq!(d.setdefault(&"new".into(), &vec![3]).unwrap(), vec![3]);
        assert_eq!(d.setdefault(&"new".into(), &vec![4]).unwrap(), vec![3]);
        assert!(matches!(d.pop(&"nope".into()), Err(ManagerError::Key(_))));
        assert_eq!(d.pop_or(&"nope".into(), vec![9]).unwrap(), vec![9]);
        d.update([(&"a".to_string(), &vec![1, 2])]).unwrap();
        assert_eq!(d.len().unwrap(), 4);
        assert_eq!(d.item(&"a".into()).unwrap(), vec![1, 2]);
        assert_eq!(
            d.to_string(),
            "{'shared': [7, 8], 'child': [1], 'new': [3], 'a': [1, 2]}"
        );
    });
}

#[test]
fn atomic_adds_from_two_processes_lose_nothing() {
    watchdog(Duration::from_secs(120), || {
        let m = Manager::start().unwrap();
        let ns = m.namespace().unwrap();
        ns.set("counter", &0).unwrap();
        let n = 500;
        let mut ps: Vec<_> = (0..2)
            .map(|_| Process::new(add_many, (ns.clone(), n)))
            .collect();
        for p in &mut ps {
            p.start().unwrap();
        }
        for p in &mut ps {
            p.join_timeout(LONG * 2).unwrap().unwrap();
        }
        assert_eq!(ns.get::<i64>("counter").unwrap(), 2 * i64::from(n));

        let v = m.value(0i64).unwrap();
        let d = m.dict([("f".to_string(), 0.0f64)]).unwrap();
        let mut ps: Vec<_> = (0..2)
            .map(|_| Process::new(add_value, (v.clone(), d.clone(), 200)))
            .collect();
        for p in &mut ps {
            p.start().unwrap();
        }
        for p in &mut ps {
            p.join_timeout(LONG * 2).unwrap().unwrap();
        }
        assert_eq!(v.get().unwrap(), 400);
        assert_eq!(d.get(&"f".into()).unwrap(), Some(200.0));
    });
}

#[test]
fn a_manager_lock_serialises_read_modify_write() {
    watchdog(Duration::from_secs(120), || {
        let m = Manager::start().unwrap();
        let lock = m.lock().unwrap();
        let ns = m.namespace().unwrap();
        ns.set("x", &0).unwrap();
        let mut ps: Vec<_> = (0..2)
            .map(|_| Process::new(locked_increments, (lock.clone(), ns.clone(), 100)))
            .collect();
        for p in &mut ps {
            p.start().unwrap();
        }
        for p in &mut ps {
            p.join_timeout(LONG * 2).unwrap().unwrap();
        }
        assert_eq!(ns.get::<i64>("x").unwrap(), 200);
        assert!(matches!(lock.release(), Err(ManagerError::NotOwner(_))));
    });
}

#[test]
fn queues_carry_items_between_processes() {
    watchdog(Duration::from_secs(60), || {
        let m = Manager::start().unwrap();
        let q = m.queue::<(u32, String)>(4).unwrap();
        let mut p = Process::new(producer, (q.clone(), 50));
        p.start().unwrap();
        for i in 0..50 {
            assert_eq!(q.get_timeout(LONG).unwrap(), (i, format!("item {i}")));
        }
        p.join_timeout(LONG).unwrap().unwrap();
        assert!(matches!(q.get_nowait(), Err(ManagerError::Empty)));
        for i in 0..4 {
            q.put_nowait(&(i, String::new())).unwrap();
        }
        assert!(matches!(
            q.put_timeout(&(9, String::new()), Duration::from_millis(20)),
            Err(ManagerError::Full)
        ));
        assert_eq!(q.qsize().unwrap(), 4);

        let jq = m.joinable_queue::<u32>(0).unwrap();
        let mut c = Process::new(joinable_consumer, jq.clone());
        c.start().unwrap();
        for i in 1..=10 {
            jq.put(&i).unwrap();
        }
        jq.put(&u32::MAX).unwrap();
        jq.join_timeout(LONG).unwrap();
        assert_eq!(c.join_timeout(LONG).unwrap().unwrap(), 55);
        assert!(matches!(jq.task_done(), Err(ManagerError::NotOwner(_))));
    });
}

#[test]
fn events_barriers_and_conditions_across_processes() {
    watchdog(Duration::from_secs(60), || {
        let m = Manager::start().unwrap();
        let ev = m.event().unwrap();
        let barrier = m.barrier(3).unwrap();
        let mut ps: Vec<_> = (0..2)
            .map(|_| Process::new(event_and_barrier, (ev.clone(), barrier.clone())))
            .collect();
        for p in &mut ps {
            p.start().unwrap();
        }
        assert!(eventually(LONG, || barrier.n_waiting().unwrap() == 0));
        ev.set().unwrap();
        let mine = barrier.wait_timeout(LONG).unwrap();
        let mut indices = vec![mine];
        for p in &mut ps {
            indices.push(p.join_timeout(LONG).unwrap().unwrap());
        }
        indices.sort();
        assert_eq!(indices, [0, 1, 2]);
        assert_eq!(barrier.parties().unwrap(), 3);
        // A wait that runs out breaks the barrier.
        assert!(matches!(
            barrier.wait_timeout(Duration::from_millis(20)),
            Err(ManagerError::BrokenBarrier)
        ));
        assert!(barrier.broken().unwrap());
        barrier.reset().unwrap();
        assert!(!barrier.broken().unwrap());

        let cond = m.condition().unwrap();
        let ns = m.namespace().unwrap();
        ns.set("go", &0).unwrap();
        let mut w = Process::new(condition_waiter, (cond.clone(), ns.clone()));
        w.start().unwrap();
        assert!(eventually(LONG, || ns.has("waiting").unwrap()));
        cond.acquire().unwrap();
        ns.set("go", &5).unwrap();
        cond.notify_all().unwrap();
        cond.release().unwrap();
        assert_eq!(w.join_timeout(LONG).unwrap().unwrap(), 5);
    });
}

#[test]
fn rlock_and_semaphores() {
    watchdog(Duration::from_secs(60), || {
        let m = Manager::start().unwrap();
        let r = m.rlock().unwrap();
        r.acquire().unwrap();
        r.acquire().unwrap();
        // Another thread does not own it.
        let r2 = r.clone();
        let other = thread::spawn(move || {
            (
                r2.try_acquire().unwrap(),
                matches!(r2.release(), Err(ManagerError::NotOwner(_))),
            )
        })
        .join()
        .unwrap();
        assert_eq!(other, (false, true));
        r.release().unwrap();
        r.release().unwrap();
        assert!(matches!(r.release(), Err(ManagerError::NotOwner(_))));

        let s = m.semaphore(2).unwrap();
        assert!(s.try_acquire().unwrap());
        assert!(s.try_acquire().unwrap());
        assert!(!s.acquire_timeout(Duration::from_millis(20)).unwrap());
        s.release().unwrap();
        s.release().unwrap();
        s.release().unwrap(); // unbounded
        let b = m.bounded_semaphore(1).unwrap();
        assert!(matches!(b.release(), Err(ManagerError::NotOwner(_))));
        let g = b.guard().unwrap();
        assert!(!b.try_acquire().unwrap());
        drop(g);
        assert!(b.try_acquire().unwrap());
    });
}

#[test]
fn proxies_are_shared_by_threads() {
    watchdog(Duration::from_secs(60), || {
        let m = Manager::start().unwrap();
        let list = m.list::<u32>([]).unwrap();
        let q = m.queue::<u32>(0).unwrap();
        // A blocked get on one thread does not stop the others.
        let blocked = {
            let q = q.clone();
            thread::spawn(move || q.get_timeout(LONG).unwrap())
        };
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let list = list.clone();
                thread::spawn(move || {
                    for i in 0..50 {
                        list.append(&(t * 100 + i)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(list.len().unwrap(), 200);
        q.put(&7).unwrap();
        assert_eq!(blocked.join().unwrap(), 7);
    });
}

#[test]
fn fork_children_of_a_spawned_child_get_their_own_connections() {
    watchdog(Duration::from_secs(60), || {
        let m = Manager::start().unwrap();
        let list = m.list::<i32>([]).unwrap();
        let mut p = Process::new(fork_from_spawned_child, list.clone());
        p.start().unwrap();
        assert_eq!(p.join_timeout(LONG).unwrap().unwrap(), 2);
        assert_eq!(list.to_vec().unwrap(), [1, 42, 2]);
    });
}

#[test]
fn registered_types_are_served_by_name() {
    watchdog(Duration::from_secs(60), || {
        let m = ManagerBuilder::new()
            .register("Counter", new_counter)
            .start()
            .unwrap();
        let c = m.create("Counter", &10).unwrap();
        let mut p = Process::new(counter_user, (c.clone(), 5));
        p.start().unwrap();
        assert_eq!(p.join_timeout(LONG).unwrap().unwrap(), 15);
        assert!(matches!(
            c.call::<_, i64>("fail", &()),
            Err(ManagerError::Remote(_))
        ));
        assert!(matches!(
            m.create("Nope", &()),
            Err(ManagerError::Unsupported(_))
        ));
        assert!(matches!(
            m.create("Counter", &"not a number"),
            Err(ManagerError::Remote(_))
        ));
    });
}

#[test]
fn a_batch_is_one_round_trip_with_one_reply_per_operation() {
    watchdog(Duration::from_secs(60), || {
        let m = Manager::start().unwrap();
        let list = m.list::<u32>([]).unwrap();
        let d = m.dict::<String, i32>([]).unwrap();
        let ns = m.namespace().unwrap();
        let mut b = m.batch();
        for i in 0..10 {
            b.append(&list, &i).unwrap();
        }
        b.insert(&d, &"k".into(), &1).unwrap();
        let got = b.get(&d, &"k".into()).unwrap();
        let missing = b.get(&d, &"missing".into()).unwrap();
        b.set_attr(&ns, "x", &1.5).unwrap();
        let added = b.add_attr(&ns, "x", 1).unwrap();
        let replies = b.run().unwrap();
        assert_eq!(replies.len(), 15);
        assert_eq!(
            replies[got]
                .as_ref()
                .unwrap()
                .clone()
                .decode::<i32>()
                .unwrap(),
            1
        );
        assert!(matches!(replies[missing], Err(ManagerError::Key(_))));
        assert_eq!(
            replies[added]
                .as_ref()
                .unwrap()
                .clone()
                .decode::<f64>()
                .unwrap(),
            2.5
        );
        assert_eq!(list.len().unwrap(), 10);
        assert_eq!(ns.to_string(), "Namespace(x=2.5)");

        let other = Manager::start().unwrap();
        let foreign = other.list::<u32>([]).unwrap();
        let mut b = m.batch();
        assert!(b.append(&foreign, &1).is_err());
    });
}

#[test]
fn objects_are_freed_when_the_last_proxy_goes() {
    watchdog(Duration::from_secs(60), || {
        let m = Manager::start().unwrap();
        assert_eq!(m.object_count().unwrap(), 0);
        let list = m.list(vec!["parent".to_string()]).unwrap();
        let clone = list.clone();
        assert_eq!(m.object_count().unwrap(), 1);
        drop(list);
        assert_eq!(m.object_count().unwrap(), 1);
        // The handle travels to a child; the parent drops its last proxy
        // before the child uses it: the transit reference keeps it alive.
        let mut p = Process::new(use_after_parent_dropped, clone);
        p.start().unwrap();
        assert!(m.object_count().unwrap() <= 1);
        let seen = p.join_timeout(LONG).unwrap().unwrap();
        assert_eq!(seen, ["parent", "from child"]);
        // Parent's reference dropped at `start` (the argument was moved);
        // the child's went with the child.
        assert!(eventually(LONG, || m.object_count().unwrap() == 0));

        // Nested views share their root's reference.
        let d = m.dict([("k".to_string(), vec![1])]).unwrap();
        let view = d.list_at::<i32>(&"k".into()).unwrap();
        drop(d);
        view.append(&2).unwrap();
        assert_eq!(view.to_vec().unwrap(), [1, 2]);
        drop(view);
        assert_eq!(m.object_count().unwrap(), 0);
        let _ = make_and_keep;
    });
}

#[test]
fn namespace_prints_like_python() {
    watchdog(Duration::from_secs(60), || {
        let m = Manager::start().unwrap();
        let ns = m.namespace().unwrap();
        ns.set("x", &1).unwrap();
        ns.set("name", "a").unwrap();
        ns.set("items", &vec![1, 2]).unwrap();
        ns.set("nothing", &None::<i32>).unwrap();
        ns.set("flag", &true).unwrap();
        ns.set("f", &0.5).unwrap();
        ns.set("_hidden", &3).unwrap();
        assert_eq!(
            ns.to_string(),
            "Namespace(f=0.5, flag=True, items=[1, 2], name='a', nothing=None, x=1)"
        );
        assert!(matches!(
            ns.get::<i32>("missing"),
            Err(ManagerError::Key(_))
        ));
        assert!(matches!(
            ns.get::<String>("x"),
            Err(ManagerError::Convert(_))
        ));
        ns.list_at::<i32>("items").append(&3).unwrap();
        assert_eq!(ns.get::<Vec<i32>>("items").unwrap(), [1, 2, 3]);
        ns.del("x").unwrap();
        assert!(!ns.has("x").unwrap());
    });
}

/// Connects as an unrelated client and appends to the named list.
fn append_to_named((address, key, i): (String, Vec<u8>, i32)) -> Result<(), String> {
    let m = Manager::connect(&address, Some(&key)).map_err(|e| e.to_string())?;
    let log = m.named("log").list::<i32>([]).map_err(|e| e.to_string())?;
    log.append(&i).map_err(|e| e.to_string())
}

#[test]
fn named_objects_outlive_the_processes_that_open_them() {
    watchdog(Duration::from_secs(60), || {
        let m = Manager::start().unwrap();
        let key = m.authkey().unwrap().to_vec();
        for i in 0..3 {
            let mut p = Process::new(append_to_named, (m.address().to_string(), key.clone(), i));
            p.start().unwrap();
            p.join_timeout(LONG).unwrap().unwrap();
        }
        assert!(eventually(LONG, || m.object_count().unwrap() == 1));
        let log = m.named("log").list::<i32>([]).unwrap();
        assert_eq!(log.to_vec().unwrap(), [0, 1, 2]);
        assert!(matches!(
            m.named("log").namespace(),
            Err(ManagerError::Type(_))
        ));
        assert!(m.forget("log").unwrap());
        // Still held by `log`, freed with it.
        assert_eq!(m.object_count().unwrap(), 1);
        drop(log);
        assert_eq!(m.object_count().unwrap(), 0);
    });
}

fn big_messages(list: ListProxy<Vec<u8>>) -> Result<usize, String> {
    // Requests and answers larger than the shared-memory slot, between
    // small ones, in both directions.
    let big = vec![7u8; 100 << 10];
    list.append(&big).map_err(|e| e.to_string())?;
    list.append(&vec![1, 2, 3]).map_err(|e| e.to_string())?;
    let first = list.get(1).map_err(|e| e.to_string())?;
    let all = list.to_vec().map_err(|e| e.to_string())?;
    if first != big || all.len() != 3 || all[2] != [1, 2, 3] {
        return Err("a big message came back wrong".into());
    }
    Ok(all.iter().map(Vec::len).sum())
}

/// `big_messages` in a child forked after this process used the list (so
/// the child starts with copies of its connections and mailboxes), then
/// the list again here.
fn fork_big_messages(list: ListProxy<Vec<u8>>) -> Result<usize, String> {
    let before = list.len().map_err(|e| e.to_string())?;
    let mut p = Process::new(big_messages, list.clone()).start_method(StartMethod::Fork);
    p.start().map_err(|e| e.to_string())?;
    let total = p.join_timeout(LONG).map_err(|e| e.to_string())??;
    if list.len().map_err(|e| e.to_string())? != before + 2 {
        return Err("the forking process lost its connection".into());
    }
    Ok(total)
}

#[test]
fn messages_larger_than_the_mailbox_go_by_the_socket() {
    watchdog(Duration::from_secs(60), || {
        let m = Manager::start().unwrap();
        let list = m.list::<Vec<u8>>([]).unwrap();
        list.append(&vec![9u8; 200 << 10]).unwrap();
        for fork in [false, true] {
            let total = if fork {
                common::in_child(fork_big_messages, list.clone()).unwrap()
            } else {
                let mut p = Process::new(big_messages, list.clone());
                p.start().unwrap();
                p.join_timeout(LONG).unwrap().unwrap()
            };
            assert_eq!(total, (200 << 10) + (100 << 10) + 3);
            assert_eq!(list.pop().unwrap(), [1, 2, 3]);
            assert_eq!(list.pop().unwrap().len(), 100 << 10);
        }
        // Many threads at once, each on its own connection and mailbox.
        let hs: Vec<_> = (0..4)
            .map(|i| {
                let list = list.clone();
                thread::spawn(move || {
                    for n in 0..200u32 {
                        let len = if n % 50 == 0 { 70 << 10 } else { 8 };
                        list.append(&vec![i as u8; len]).unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(list.len().unwrap(), 1 + 4 * 200);
    });
}
