use multiproc::cluster::{self, ClusterConfig, ClusterPool, NetChannel, NetWriter};
use std::time::{Duration, Instant};
use zenoh::Wait;

const USER: &str = "u";
const PW: &str = "p";

fn square(x: u64) -> u64 {
    x * x
}

fn writer(ep: String) -> (f64, f64) {
    let s = ClusterConfig::connect(ep)
        .credentials(USER, PW)
        .open()
        .unwrap();
    let w: NetWriter<u64> = NetWriter::open(&s, "bench").unwrap();
    for i in 0..100 {
        w.write(&i).unwrap();
    }
    let n = 1000;
    let t = Instant::now();
    for i in 0..n {
        w.write(&i).unwrap();
    }
    let chan = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    // raw zenoh query/reply on the same session and endpoint
    let z = zenoh::open({
        let mut c = zenoh::Config::default();
        c.insert_json5("mode", "\"client\"").unwrap();
        c.insert_json5("scouting/multicast/enabled", "false")
            .unwrap();
        c.insert_json5(
            "connect/endpoints",
            &format!("[\"{}\"]", std::env::var("EP").unwrap()),
        )
        .unwrap();
        c.insert_json5("transport/auth/usrpwd/user", "\"u\"")
            .unwrap();
        c.insert_json5("transport/auth/usrpwd/password", "\"p\"")
            .unwrap();
        c
    })
    .wait()
    .unwrap();
    for _ in 0..100 {
        let r = z.get("raw/echo").payload(vec![1u8; 8]).wait().unwrap();
        r.recv().unwrap();
    }
    let t = Instant::now();
    for _ in 0..n {
        let r = z.get("raw/echo").payload(vec![1u8; 8]).wait().unwrap();
        r.recv().unwrap();
    }
    let raw = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    w.write(&u64::MAX).unwrap();
    (chan, raw)
}

fn main() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ep = format!("tcp/127.0.0.1:{port}");
    unsafe { std::env::set_var("EP", &ep) };
    let s = ClusterConfig::listen(ep.clone())
        .credentials(USER, PW)
        .open()
        .unwrap();
    let chan: NetChannel<u64> = NetChannel::home(&s, "bench").unwrap();
    let _q = s
        .z_for_measure()
        .declare_queryable("raw/echo")
        .callback(|q| {
            let _ = q.reply(q.key_expr().clone(), vec![2u8; 8]).wait();
        })
        .wait()
        .unwrap();
    let r = chan.reader().unwrap();
    let h = multiproc::Builder::new().spawn(writer, ep.clone()).unwrap();
    loop {
        if r.read().unwrap() == u64::MAX {
            break;
        }
    }
    let (c, raw) = h.join().unwrap();
    println!(
        "net channel write (rendezvous, other process): {c:.1} us; raw zenoh get/reply: {raw:.1} us; ratio {:.2}",
        c / raw
    );
    // pool
    let pool = ClusterPool::with_session(&s).unwrap();
    let mut ws = Vec::new();
    for _ in 0..2 {
        ws.push(
            std::process::Command::new(std::env::current_exe().unwrap())
                .env(cluster::ENV_WORKER, "1")
                .env(cluster::ENV_ENDPOINT, &ep)
                .env(cluster::ENV_USER, USER)
                .env(cluster::ENV_PASSWORD, PW)
                .env("MULTIPROC_CLUSTER_IDLE_EXIT_MS", "1000")
                .spawn()
                .unwrap(),
        );
    }
    pool.wait_for_workers(2, Duration::from_secs(30));
    pool.map_chunked(square, 0..200u64, 1).unwrap();
    let n = 3000u64;
    let t = Instant::now();
    pool.map_chunked(square, 0..n, 1).unwrap();
    let cl = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    pool.map(square, 0..100_000u64).unwrap();
    let cl_def = 100_000.0 / t.elapsed().as_secs_f64();
    let local = multiproc::Pool::new(2).unwrap();
    local.map_chunked(square, 0..200u64, 1).unwrap();
    let t = Instant::now();
    local.map_chunked(square, 0..n, 1).unwrap();
    let lo = n as f64 / t.elapsed().as_secs_f64();
    println!(
        "map chunksize 1, 2 workers: cluster {cl:.0} tasks/s, local {lo:.0} tasks/s; cluster map default chunks 100k: {cl_def:.0} items/s"
    );
    drop(pool);
    for mut w in ws {
        w.wait().unwrap();
    }
}
