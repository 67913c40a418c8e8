//! scratch
use multiproc::csp::{Channel, ChannelError, CspProcess, Reader, Writer, parallel};
use std::time::Instant;

fn prefix(ends: (Reader<u64>, Writer<u64>)) -> Result<f64, ChannelError> {
    let (inp, out) = ends;
    out.write(&0)?;
    loop {
        out.write(&inp.read()?)?;
    }
}
fn delta(ends: (Reader<u64>, Writer<u64>, Writer<u64>)) -> Result<f64, ChannelError> {
    let (inp, a, b) = ends;
    loop {
        let x = inp.read()?;
        a.write(&x)?;
        b.write(&x)?;
    }
}
fn succ(ends: (Reader<u64>, Writer<u64>)) -> Result<f64, ChannelError> {
    let (inp, out) = ends;
    loop {
        out.write(&(inp.read()? + 1))?;
    }
}
fn consumer((inp, n): (Reader<u64>, u64)) -> Result<f64, ChannelError> {
    for _ in 0..100 {
        inp.read()?;
    }
    let t0 = Instant::now();
    let c0 = cpu();
    for _ in 0..n {
        inp.read()?;
    }
    let us = t0.elapsed().as_secs_f64() * 1e6 / (4 * n) as f64;
    let cus = (cpu() - c0) * 1e6 / (4 * n) as f64;
    println!("wall {us:.3} cpu {cus:.3} us/comm");
    inp.poison();
    Ok(us)
}
fn cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}
fn main() {
    let shm = std::env::args().nth(1).as_deref() == Some("shm");
    for _ in 0..3 {
        let mk = || {
            if shm {
                Channel::<u64>::new().unwrap()
            } else {
                Channel::builder().threads_only().build().unwrap()
            }
        };
        let (a, b, c, d) = (mk(), mk(), mk(), mk());
        let n = 200_000;
        let out = parallel([
            CspProcess::light(prefix, (c.reader(), a.writer())),
            CspProcess::light(delta, (a.reader(), b.writer(), d.writer())),
            CspProcess::light(succ, (b.reader(), c.writer())),
            CspProcess::light(consumer, (d.reader(), n)),
        ])
        .unwrap();
        let _ = out;
    }
}
