//! Messages larger than a channel's inline slot travel through a named
//! shared-memory segment of their own. They arrive whole, between threads
//! and between OS processes, and no segment is left behind: not after
//! delivery, a timed-out write, an output guard that was not chosen, nor
//! messages still buffered when the channel is poisoned or its readers
//! retire. One test, so that nothing else in this binary spills meanwhile.

mod common;
mod csp_common;

use std::time::Duration;

use common::watchdog;
use multiproc::StartMethod;
use multiproc::csp::{
    Alternation, Channel, ChannelError, CspProcess, Outcome, Reader, Writer, parallel,
};

fn big(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn spilled_segments() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("multiproc-csp-"))
                .collect()
        })
        .unwrap_or_default()
}

fn big_writer(args: (Writer<Vec<u8>>, u8)) -> Result<(), ChannelError> {
    let (w, seed) = args;
    for k in 0..3 {
        w.write(&big(seed + k, 300_000))?;
    }
    Ok(())
}

fn big_reader(r: Reader<Vec<u8>>) -> Result<Vec<usize>, ChannelError> {
    let mut lens = Vec::new();
    for k in 0..3u8 {
        let v = r.read()?;
        assert_eq!(v, big(7 + k, 300_000));
        lens.push(v.len());
    }
    Ok(lens)
}

fn small_slots<T>(buffer: usize) -> Channel<T> {
    Channel::builder()
        .slot_size(1024)
        .buffer(buffer)
        .build()
        .unwrap()
}

#[test]
fn spilled_messages_arrive_whole_and_leave_nothing_behind() {
    watchdog(Duration::from_secs(120), || {
        let before = spilled_segments().len();

        // Between threads, rendezvous and buffered.
        for buffer in [0, 2] {
            let c = small_slots::<Vec<u8>>(buffer);
            let (r, w) = (c.reader(), c.writer());
            let t = std::thread::spawn(move || big_writer((w, 7)));
            assert_eq!(big_reader(r).unwrap(), vec![300_000; 3]);
            t.join().unwrap().unwrap();
        }

        // Between OS processes, both directions.
        for buffer in [0, 2] {
            let c = small_slots::<Vec<u8>>(buffer);
            let out = parallel([
                CspProcess::function(|a| big_writer(a).map(|_| Vec::new()), (c.writer(), 7))
                    .start_method(StartMethod::Spawn),
                CspProcess::function(big_reader, c.reader()),
            ])
            .unwrap();
            assert_eq!(out[1], Outcome::Done(vec![300_000; 3]));
            // (The first network retired c.)
            let c = small_slots::<Vec<u8>>(buffer);
            let out = parallel([
                CspProcess::function(|a| big_writer(a).map(|_| Vec::new()), (c.writer(), 7)),
                CspProcess::function(big_reader, c.reader()).start_method(StartMethod::Spawn),
            ])
            .unwrap();
            assert_eq!(out[1], Outcome::Done(vec![300_000; 3]));
        }

        // A write that times out takes its segment back.
        let c = small_slots::<Vec<u8>>(0);
        let _r = c.reader();
        let w = c.writer();
        assert!(matches!(
            w.write_timeout(&big(1, 10_000), Duration::from_millis(20)),
            Err(ChannelError::Timeout)
        ));

        // Output guards that are not chosen take theirs back.
        let chans: Vec<Channel<Vec<u8>>> = (0..3).map(|_| small_slots(1)).collect();
        let ws: Vec<_> = chans.iter().map(|c| c.writer()).collect();
        let rs: Vec<_> = chans.iter().map(|c| c.reader()).collect();
        let chosen = Alternation::new()
            .output(&ws[0], &big(1, 5000), || 0)
            .output(&ws[1], &big(2, 5000), || 1)
            .output(&ws[2], &big(3, 5000), || 2)
            .pri_select()
            .unwrap();
        assert_eq!(chosen, 0);
        assert_eq!(rs[0].read().unwrap(), big(1, 5000));

        // And an input guard fetches a spilled message.
        ws[1].write(&big(9, 7000)).unwrap();
        let got = Alternation::new()
            .input(&rs[0], |v: Vec<u8>| v)
            .input(&rs[1], |v: Vec<u8>| v)
            .pri_select()
            .unwrap();
        assert_eq!(got, big(9, 7000));

        // Buffered spilled messages are released by poison...
        let c = small_slots::<Vec<u8>>(3);
        let (_r, w) = (c.reader(), c.writer());
        w.write(&big(1, 4000)).unwrap();
        w.write(&big(2, 4000)).unwrap();
        c.poison();

        // ...and when every reader retires.
        let c = small_slots::<Vec<u8>>(3);
        let (r, w) = (c.reader(), c.writer());
        w.write(&big(1, 4000)).unwrap();
        r.retire();
        assert!(matches!(w.write(&big(2, 4000)), Err(ChannelError::Retired)));

        assert_eq!(spilled_segments().len(), before, "{:?}", spilled_segments());
    });
}

#[test]
fn the_message_limit_is_enforced_for_spilled_messages() {
    let c: Channel<Vec<u8>> = Channel::builder()
        .slot_size(1024)
        .max_message(100_000)
        .build()
        .unwrap();
    let w = c.writer();
    assert!(matches!(
        w.write(&vec![1u8; 200_000]),
        Err(ChannelError::TooLarge { max: 100_000, .. })
    ));
}
