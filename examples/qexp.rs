use multiproc::{Process, Queue};
use std::time::{Duration, Instant};
fn echo(args: (Queue<u64>, Queue<u64>)) {
    let (ping, pong) = args;
    loop {
        let v = ping.get().unwrap();
        pong.put(v).unwrap();
        if v == u64::MAX {
            return;
        }
    }
}
fn main() {
    let ping: Queue<u64> = Queue::new().unwrap();
    let pong: Queue<u64> = Queue::new().unwrap();
    let threads = std::env::args().nth(1).is_some();
    let mut p = None;
    if threads {
        let (a, b) = (ping.clone(), pong.clone());
        std::thread::spawn(move || echo((a, b)));
    } else {
        let mut pr = Process::new(echo, (ping.clone(), pong.clone()));
        pr.start().unwrap();
        p = Some(pr);
    }
    for _ in 0..5 {
        let t = Instant::now();
        let n = 20000;
        let mut worst = Duration::ZERO;
        for i in 0..n {
            let t1 = Instant::now();
            ping.put(i).unwrap();
            pong.get().unwrap();
            worst = worst.max(t1.elapsed());
        }
        println!(
            "{:.2} us/rt worst {:?}",
            t.elapsed().as_secs_f64() * 1e6 / n as f64,
            worst
        );
    }
    ping.put(u64::MAX).unwrap();
    pong.get().unwrap();
    if let Some(mut p) = p {
        p.join().unwrap();
    }
}
