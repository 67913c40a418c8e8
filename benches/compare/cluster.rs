//! The cluster (feature `zenoh`): a network CSP channel and the cluster
//! pool over Zenoh on 127.0.0.1, against raw Zenoh queries on the same
//! router.
//!
//! * `cluster.channel.write`: µs per channel communication, like for
//!   like with one raw query/reply. A sink process (spawn start method, a
//!   client session) is the home of channel `sink` and drains it with a
//!   local reader; the bench writes to it: each write is one query to the
//!   home, answered once the reader has taken the value. Raw: the sink
//!   process also declares a Zenoh queryable (`multiproc/bench/raw/echo`)
//!   answering each query with its payload; one `get` and its reply.
//! * `cluster.channel.roundtrip`: µs per round trip. The bench process
//!   embeds the router and is the home of two network channels; an echo
//!   process reads `ping` and writes what it read to `pong`; the bench
//!   writes to `ping` and reads `pong`. A channel round trip is two
//!   rendezvous, each a query of the echo process to the home, so the raw
//!   figure is two raw query/replies to the echo process's queryable (as
//!   above) per round trip.
//! * `cluster.commstime.2proc`: the commstime ring (µs per communication,
//!   four per cycle, timed in the Consumer) across two OS processes over
//!   network channels on 127.0.0.1: the bench process embeds the router,
//!   is the home of the four channels and runs Prefix and Consumer as
//!   threads; a far process (spawn, a client session over TCP) runs Delta
//!   and Succ as threads. Python: the same split with PyCSP 0.9.2's
//!   network channels (its own TCP protocol on 127.0.0.1; channels made
//!   in the main process, Delta and Succ in one `@multiprocess`). Raw: one
//!   raw Zenoh query/reply between the two processes, the least one
//!   communication costs when each is a query.
//! * `cluster.map.chunksize1_2workers`: tasks per second of
//!   `map_chunked(square, 0..N, 1)` (one task per pull) on a cluster pool
//!   with two worker processes (this binary exec'd in worker mode, with
//!   the default prefetch of 2; `MULTIPROC_CLUSTER_PREFETCH=0` in the
//!   bench's environment measures one task per pull). Raw: two processes
//!   declaring a queryable that squares a `u64`, each asked in turn by one
//!   thread of the bench (one query in flight per worker; a cluster
//!   worker also has one pull in flight, but a pull brings up to its
//!   prefetch of tasks and overlaps the task it runs). Also measured:
//!   the local `Pool` of two workers on the same map, also one task per
//!   chunk (`local_pool`).
//!
//! Zenoh starts threads in the bench process, and the rows' processes use
//! the spawn start method: these rows run after every row that forks.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use multiproc::cluster::{
    ClusterConfig, ENV_ENDPOINT, ENV_IDLE_EXIT_MS, ENV_PASSWORD, ENV_USER, ENV_WORKER, NetChannel,
    NetReader, NetWriter, Session,
};
use multiproc::{Builder, Pool, StartMethod};
use zenoh::Wait;

use crate::harness::{
    BenchResult, Ctx, Figures, Row, Unit, alternate_all, check_eq, in_forked_child, micros_per_op,
};

const USER: &str = "bench";
const PASSWORD: &str = "bench-password";

pub fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "cluster.channel.write",
            unit: Unit::Micros,
            run: |ctx| in_forked_child(|| channel_write(ctx)),
            python: false,
            round_trip: false,
        },
        Row {
            name: "cluster.commstime.2proc",
            unit: Unit::Micros,
            run: |ctx| in_forked_child(|| commstime_2proc(ctx)),
            python: true,
            round_trip: false,
        },
        Row {
            name: "cluster.channel.roundtrip",
            unit: Unit::Micros,
            run: |ctx| in_forked_child(|| channel_roundtrip(ctx)),
            python: false,
            round_trip: false,
        },
        Row {
            name: "cluster.map.chunksize1_2workers",
            unit: Unit::OpsPerSec,
            run: |ctx| in_forked_child(|| map_2workers(ctx)),
            python: false,
            round_trip: false,
        },
    ]
}

fn endpoint() -> BenchResult<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(format!("tcp/127.0.0.1:{}", l.local_addr()?.port()))
}

fn router(endpoint: &str) -> BenchResult<ClusterConfig> {
    Ok(ClusterConfig::listen(endpoint).credentials(USER, PASSWORD))
}

fn client(endpoint: &str) -> Session {
    ClusterConfig::connect(endpoint)
        .credentials(USER, PASSWORD)
        .open()
        .expect("join the bench's router")
}

/// A raw Zenoh queryable on `key` answering with `f(payload)`.
fn queryable(s: &Session, key: String, f: fn(&[u8]) -> Vec<u8>) -> zenoh::query::Queryable<()> {
    s.zenoh()
        .declare_queryable(key)
        .callback(move |q| {
            let p = q
                .payload()
                .map(|p| p.to_bytes().into_owned())
                .unwrap_or_default();
            let _ = q.reply(q.key_expr().clone(), f(&p)).wait();
        })
        .wait()
        .expect("declare a queryable")
}

fn echo_bytes(p: &[u8]) -> Vec<u8> {
    p.to_vec()
}

/// The echo process: network channel `ping` → `pong`, and the raw
/// echo queryable, until `ping` ends.
fn echo(endpoint: String) {
    let s = client(&endpoint);
    let _q = queryable(&s, ECHO.into(), echo_bytes);
    let (Ok(r), Ok(w)) = (
        NetReader::<u64>::open(&s, "ping"),
        NetWriter::<u64>::open(&s, "pong"),
    ) else {
        return;
    };
    while let Ok(v) = r.read() {
        if w.write(&v).is_err() {
            return;
        }
    }
}

/// One raw Zenoh query/reply to the echo queryable.
fn raw_echo(z: &zenoh::Session, i: u64) -> BenchResult<()> {
    let replies = z
        .get(ECHO)
        .payload(i.to_le_bytes().to_vec())
        .timeout(Duration::from_secs(10))
        .wait()
        .map_err(|e| e.to_string())?;
    let reply = replies
        .recv()
        .map_err(|e| e.to_string())?
        .into_result()
        .map_err(|e| format!("{e:?}"))?;
    check_eq("raw echo", reply.payload().to_bytes().len(), 8)
}

const ECHO: &str = "multiproc/bench/raw/echo";

/// Waits until the echo queryable answers (it may lag the far process's
/// channel ends by a moment).
fn wait_for_echo(z: &zenoh::Session) -> BenchResult<()> {
    wait_for(|| {
        z.get(ECHO)
            .payload(vec![0u8; 8])
            .timeout(Duration::from_secs(1))
            .wait()
            .ok()
            .and_then(|r| r.recv().ok())
            .is_some()
    })
}

/// The sink process: home of channel `sink`, drained by a local reader,
/// and the raw echo queryable, until every writer of `sink` retires.
fn sink(endpoint: String) {
    let s = client(&endpoint);
    let _q = queryable(&s, ECHO.into(), echo_bytes);
    let Ok(home) = NetChannel::<u64>::home(&s, "sink") else {
        return;
    };
    let Ok(r) = home.reader() else { return };
    while r.read().is_ok() {}
}

fn channel_write(ctx: &Ctx) -> BenchResult<Figures> {
    let ep = endpoint()?;
    let s = router(&ep)?.open()?;
    let child = Builder::new()
        .start_method(StartMethod::Spawn)
        .spawn(sink, ep.clone())?;
    let z = s.zenoh();
    wait_for_echo(z)?;
    let w = NetWriter::<u64>::open(&s, "sink")?;
    let n = ctx.pick(200u64, 2000);
    let mut chan = || -> BenchResult<f64> {
        let t0 = Instant::now();
        for i in 0..n {
            w.write(&i)?;
        }
        Ok(micros_per_op(t0, n))
    };
    let mut raw = || -> BenchResult<f64> {
        let t0 = Instant::now();
        for i in 0..n {
            raw_echo(z, i)?;
        }
        Ok(micros_per_op(t0, n))
    };
    let m = alternate_all(ctx.pick(1, 3), ctx.pick(3, 15), &mut [&mut chan, &mut raw])?;
    drop(w);
    let _ = child.join();
    Ok(Figures {
        krate: m[0],
        raw: m[1],
        extra: Vec::new(),
    })
}

/// Cycles of the commstime ring before the Consumer starts its clock.
const COMMSTIME_WARM: u64 = 50;

/// The far process of `cluster.commstime.2proc`: the raw echo queryable,
/// and for every tag read from channel `ctl` (until it ends) Delta and
/// Succ on the channels `a<tag>` … `d<tag>`, as threads.
fn commstime_far(endpoint: String) {
    let s = client(&endpoint);
    let _q = queryable(&s, ECHO.into(), echo_bytes);
    let Ok(ctl) = NetReader::<String>::open(&s, "ctl") else {
        return;
    };
    while let Ok(tag) = ctl.read() {
        let ends = (|| -> Result<_, multiproc::csp::ChannelError> {
            Ok((
                NetReader::<u64>::open(&s, &format!("a{tag}"))?,
                NetWriter::<u64>::open(&s, &format!("b{tag}"))?,
                NetWriter::<u64>::open(&s, &format!("d{tag}"))?,
                NetReader::<u64>::open(&s, &format!("b{tag}"))?,
                NetWriter::<u64>::open(&s, &format!("c{tag}"))?,
            ))
        })();
        let Ok((a, b_out, d, b_in, c)) = ends else {
            return;
        };
        std::thread::scope(|sc| {
            // Delta, then Succ; each ends (retiring its ends) at the first
            // error, as the ring's poison spreads.
            sc.spawn(move || -> Result<(), multiproc::csp::ChannelError> {
                loop {
                    let x = a.read()?;
                    b_out.write(&x)?;
                    d.write(&x)?;
                }
            });
            sc.spawn(move || -> Result<(), multiproc::csp::ChannelError> {
                loop {
                    c.write(&(b_in.read()? + 1))?;
                }
            });
        });
    }
}

/// One commstime network over the channels `a<tag>` … `d<tag>` (homed
/// here), with the far process running Delta and Succ: µs per
/// communication.
fn commstime_net(s: &Session, ctl: &NetWriter<String>, tag: u32, n: u64) -> BenchResult<f64> {
    let homes: Vec<NetChannel<u64>> = ["a", "b", "c", "d"]
        .iter()
        .map(|c| NetChannel::home(s, &format!("{c}{tag}")))
        .collect::<Result<_, _>>()?;
    let a = homes[0].writer()?;
    let c = homes[2].reader()?;
    let d = homes[3].reader()?;
    ctl.write(&tag.to_string())?;
    let us = std::thread::scope(|sc| -> BenchResult<f64> {
        // Prefix.
        sc.spawn(move || -> Result<(), multiproc::csp::ChannelError> {
            a.write(&0)?;
            loop {
                a.write(&c.read()?)?;
            }
        });
        // Consumer.
        for _ in 0..COMMSTIME_WARM {
            d.read()?;
        }
        let t0 = Instant::now();
        let mut last = 0;
        for _ in 0..n {
            last = d.read()?;
        }
        let us = micros_per_op(t0, 4 * n);
        d.poison();
        check_eq("commstime count", last, COMMSTIME_WARM + n - 1)?;
        Ok(us)
    })?;
    drop(homes);
    Ok(us)
}

fn commstime_2proc(ctx: &Ctx) -> BenchResult<Figures> {
    let ep = endpoint()?;
    let s = router(&ep)?.open()?;
    let ctl_home: NetChannel<String> = NetChannel::home(&s, "ctl")?;
    let ctl = ctl_home.writer()?;
    let child = Builder::new()
        .start_method(StartMethod::Spawn)
        .spawn(commstime_far, ep.clone())?;
    let z = s.zenoh();
    wait_for_echo(z)?;
    let n = ctx.pick(100u64, 500);
    let mut tag = 0u32;
    let mut chan = || -> BenchResult<f64> {
        tag += 1;
        commstime_net(&s, &ctl, tag, n)
    };
    let reps = 4 * (COMMSTIME_WARM + n);
    let mut raw = || -> BenchResult<f64> {
        let t0 = Instant::now();
        for i in 0..reps {
            raw_echo(z, i)?;
        }
        Ok(micros_per_op(t0, reps))
    };
    let m = alternate_all(ctx.pick(0, 1), ctx.pick(2, 5), &mut [&mut chan, &mut raw])?;
    drop(ctl);
    drop(ctl_home);
    let _ = child.join();
    Ok(Figures {
        krate: m[0],
        raw: m[1],
        extra: Vec::new(),
    })
}

fn channel_roundtrip(ctx: &Ctx) -> BenchResult<Figures> {
    let ep = endpoint()?;
    let s = router(&ep)?.open()?;
    let ping: NetChannel<u64> = NetChannel::home(&s, "ping")?;
    let pong: NetChannel<u64> = NetChannel::home(&s, "pong")?;
    let (w, r) = (ping.writer()?, pong.reader()?);
    let child = Builder::new()
        .start_method(StartMethod::Spawn)
        .spawn(echo, ep.clone())?;
    let n = ctx.pick(200u64, 2000);
    let mut chan = || -> BenchResult<f64> {
        let t0 = Instant::now();
        for i in 0..n {
            w.write(&i)?;
            check_eq("echo", r.read()?, i)?;
        }
        Ok(t0.elapsed().as_secs_f64() * 1e6 / n as f64)
    };
    let z = s.zenoh();
    // Two raw query/replies per round trip: one per rendezvous.
    let mut raw = || -> BenchResult<f64> {
        let t0 = Instant::now();
        for i in 0..n {
            raw_echo(z, i)?;
            raw_echo(z, i)?;
        }
        Ok(t0.elapsed().as_secs_f64() * 1e6 / n as f64)
    };
    wait_for_echo(z)?;
    let m = alternate_all(ctx.pick(1, 3), ctx.pick(3, 15), &mut [&mut chan, &mut raw])?;
    drop((w, r));
    drop((ping, pong));
    let _ = child.join();
    Ok(Figures {
        krate: m[0],
        raw: m[1],
        extra: Vec::new(),
    })
}

fn wait_for(mut f: impl FnMut() -> bool) -> BenchResult<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        if Instant::now() > deadline {
            return Err("the echo process never answered".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn square(x: u64) -> u64 {
    x.wrapping_mul(x)
}

fn square_bytes(p: &[u8]) -> Vec<u8> {
    let mut b = [0u8; 8];
    let n = p.len().min(8);
    b[..n].copy_from_slice(&p[..n]);
    square(u64::from_le_bytes(b)).to_le_bytes().to_vec()
}

/// A raw worker: the queryable `multiproc/bench/raw/square/<k>`, for
/// `secs`.
fn raw_worker((endpoint, k, secs): (String, u32, u64)) {
    let s = client(&endpoint);
    let _q = queryable(&s, format!("multiproc/bench/raw/square/{k}"), square_bytes);
    std::thread::sleep(Duration::from_secs(secs));
}

/// Kills and reaps the cluster workers on drop.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn map_2workers(ctx: &Ctx) -> BenchResult<Figures> {
    let n = ctx.pick(2_000u64, 20_000);
    let ep = endpoint()?;
    let pool = Pool::cluster(router(&ep)?)?;
    let exe = std::env::current_exe()?;
    let mut workers = Workers(Vec::new());
    for _ in 0..2 {
        workers.0.push(
            Command::new(&exe)
                .env(ENV_WORKER, "1")
                .env(ENV_ENDPOINT, &ep)
                .env(ENV_USER, USER)
                .env(ENV_PASSWORD, PASSWORD)
                .env(ENV_IDLE_EXIT_MS, "60000")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
    }
    if pool.wait_for_workers(2, Duration::from_secs(60)) < 2 {
        return Err("the cluster workers did not join".into());
    }
    let secs = 600;
    let raws: Vec<_> = (0..2u32)
        .map(|k| {
            Builder::new()
                .start_method(StartMethod::Spawn)
                .spawn(raw_worker, (ep.clone(), k, secs))
        })
        .collect::<Result<_, _>>()?;
    let session = ClusterConfig::connect(ep.clone())
        .credentials(USER, PASSWORD)
        .open()?;
    let z = session.zenoh();
    let ask = |k: u32, x: u64| -> BenchResult<u64> {
        let replies = z
            .get(format!("multiproc/bench/raw/square/{k}"))
            .payload(x.to_le_bytes().to_vec())
            .timeout(Duration::from_secs(10))
            .wait()
            .map_err(|e| e.to_string())?;
        let reply = replies
            .recv()
            .map_err(|e| e.to_string())?
            .into_result()
            .map_err(|e| format!("{e:?}"))?;
        let b = reply.payload().to_bytes();
        let mut a = [0u8; 8];
        a.copy_from_slice(b.get(..8).ok_or("short raw reply")?);
        Ok(u64::from_le_bytes(a))
    };
    for k in 0..2 {
        wait_for(|| ask(k, 3).is_ok_and(|v| v == 9))?;
    }
    let local = Pool::new(2)?;
    let want: u64 = (0..n).map(square).fold(0, u64::wrapping_add);
    let sum = |v: Vec<u64>| v.into_iter().fold(0, u64::wrapping_add);
    let mut cluster = || -> BenchResult<f64> {
        let t0 = Instant::now();
        let got = pool.map_chunked(square, 0..n, 1)?;
        let rate = n as f64 / t0.elapsed().as_secs_f64();
        check_eq("cluster map", sum(got), want)?;
        Ok(rate)
    };
    let mut raw = || -> BenchResult<f64> {
        let t0 = Instant::now();
        let got = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..2u32)
                .map(|k| {
                    let ask = &ask;
                    sc.spawn(move || -> Result<u64, String> {
                        let mut s = 0u64;
                        for x in (u64::from(k)..n).step_by(2) {
                            s = s.wrapping_add(ask(k, x).map_err(|e| e.to_string())?);
                        }
                        Ok(s)
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().map_err(|_| "a raw thread panicked".to_string())?)
                .collect::<Result<Vec<u64>, String>>()
        })?;
        let rate = n as f64 / t0.elapsed().as_secs_f64();
        check_eq("raw map", sum(got), want)?;
        Ok(rate)
    };
    let mut local_pool = || -> BenchResult<f64> {
        let t0 = Instant::now();
        let got = local.map_chunked(square, 0..n, 1)?;
        let rate = n as f64 / t0.elapsed().as_secs_f64();
        check_eq("local map", sum(got), want)?;
        Ok(rate)
    };
    let m = alternate_all(
        1,
        ctx.pick(3, 9),
        &mut [&mut cluster, &mut raw, &mut local_pool],
    )?;
    drop(local);
    drop(pool);
    for r in &raws {
        let _ = r.kill();
    }
    for r in raws {
        let _ = r.join();
    }
    drop(workers);
    Ok(Figures {
        krate: m[0],
        raw: m[1],
        extra: vec![("local_pool", m[2])],
    })
}
