//! A CSP pipeline: a producer, a worker and a consumer joined by two
//! channels, shut down by poison. The producer sends 1..=10 and poisons
//! its channel; the worker squares what it reads until the poison reaches
//! it, and passes the poison on (it ends by poison, so every channel it
//! holds is poisoned); the consumer prints what arrives and its total.
//! The worker runs as an OS process, the others as threads.
//!
//! ```text
//! $ cargo run --example csp_pipeline
//! 1
//! 4
//! 9
//! ...
//! 100
//! total 385
//! ```

use multiproc::csp::{Channel, ChannelError, CspProcess, Reader, Writer, parallel};

fn producer(out: Writer<u64>) -> Result<u64, ChannelError> {
    for i in 1..=10 {
        out.write(&i)?;
    }
    out.poison();
    Ok(0)
}

fn worker(ends: (Reader<u64>, Writer<u64>)) -> Result<u64, ChannelError> {
    let (inp, out) = ends;
    loop {
        let x = inp.read()?;
        out.write(&(x * x))?;
    }
}

fn consumer(inp: Reader<u64>) -> Result<u64, ChannelError> {
    let mut total = 0;
    loop {
        match inp.read() {
            Ok(x) => {
                println!("{x}");
                total += x;
            }
            Err(ChannelError::Poisoned) => return Ok(total),
            Err(e) => return Err(e),
        }
    }
}

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let jobs = Channel::new()?;
    let results = Channel::new()?;
    let outcomes = parallel([
        CspProcess::function(producer, jobs.writer()),
        CspProcess::function(worker, (jobs.reader(), results.writer())).os(),
        CspProcess::function(consumer, results.reader()),
    ])?;
    let total = outcomes[2].clone().value().unwrap_or_default();
    println!("total {total}");
    Ok(())
}
