//! Frames of every size between two processes: the read buffer growing
//! from one page, frames just under and over the buffer, and large frames
//! received by `recv_bytes` (returned without a second copy) and by
//! `recv_bytes_into` (read straight into the caller's buffer).

mod common;

use common::{LIMIT, watchdog};
use multiproc::{Connection, Process, RecvError, pipe};

/// Byte `i` of the frame numbered `k`.
fn pattern(k: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) + k) as u8).collect()
}

/// Sends one frame of each size, in order, numbered by position.
fn send_frames((conn, sizes): (Connection, Vec<u32>)) -> usize {
    for (k, &len) in sizes.iter().enumerate() {
        conn.send_bytes(&pattern(k, len as usize)).unwrap();
    }
    sizes.len()
}

const BUF: usize = 64 << 10;

#[test]
fn many_small_frames_arrive_in_order() {
    watchdog(LIMIT, || {
        // Sizes that straddle the growing buffer's boundaries; all sent
        // before the parent reads, so reads come back full.
        let sizes: Vec<u32> = (0..5000u32).map(|k| (k * 37) % 700).collect();
        let (ours, theirs) = pipe().unwrap();
        let mut p = Process::new(send_frames, (theirs, sizes.clone()));
        p.start().unwrap();
        for (k, &len) in sizes.iter().enumerate() {
            let got = ours.recv_bytes().unwrap();
            assert_eq!(got, pattern(k, len as usize), "frame {k}");
        }
        assert_eq!(p.join().unwrap(), sizes.len());
    });
}

#[test]
fn frames_around_the_buffer_size_with_recv_bytes() {
    watchdog(LIMIT, || {
        let sizes: Vec<u32> = [
            BUF - 4,
            BUF - 3,
            10,
            BUF,
            (1 << 20) + 7,
            0,
            3 << 20,
            1,
            BUF + 1,
        ]
        .iter()
        .map(|&n| n as u32)
        .collect();
        let (ours, theirs) = pipe().unwrap();
        let mut p = Process::new(send_frames, (theirs, sizes.clone()));
        p.start().unwrap();
        for (k, &len) in sizes.iter().enumerate() {
            let got = ours.recv_bytes().unwrap();
            assert_eq!(got.len(), len as usize, "frame {k}");
            assert!(got == pattern(k, len as usize), "frame {k} content");
        }
        assert_eq!(p.join().unwrap(), sizes.len());
        assert!(matches!(ours.recv_bytes(), Err(RecvError::Disconnected)));
    });
}

#[test]
fn large_frames_with_recv_bytes_into() {
    watchdog(LIMIT, || {
        let sizes: Vec<u32> = [1 << 20, 16, 200 << 10, 0, 70 << 10, 1 << 20, BUF - 4]
            .iter()
            .map(|&n| n as u32)
            .collect();
        let (ours, theirs) = pipe().unwrap();
        let mut p = Process::new(send_frames, (theirs, sizes.clone()));
        p.start().unwrap();
        let mut buf = vec![0u8; 2 << 20];
        for (k, &len) in sizes.iter().enumerate() {
            let len = len as usize;
            if len == 70 << 10 {
                // Too small a buffer: refused, and the frame stays queued.
                let mut small = vec![0u8; 1024];
                match ours.recv_bytes_into(&mut small) {
                    Err(RecvError::BufferTooSmall { len: l, capacity }) => {
                        assert_eq!((l, capacity), (len, 1024));
                    }
                    other => panic!("expected BufferTooSmall, got {other:?}"),
                }
            }
            buf.fill(0xee);
            let n = ours.recv_bytes_into(&mut buf).unwrap();
            assert_eq!(n, len, "frame {k}");
            assert!(buf[..n] == pattern(k, len)[..], "frame {k} content");
            // Nothing written past the frame.
            assert!(buf[n..n + 16].iter().all(|&b| b == 0xee), "frame {k} tail");
        }
        assert_eq!(p.join().unwrap(), sizes.len());
    });
}

#[test]
fn recv_bytes_into_a_buffer_of_exactly_the_frame_size() {
    watchdog(LIMIT, || {
        let sizes = vec![(1 << 20) + 3, 5];
        let (ours, theirs) = pipe().unwrap();
        let mut p = Process::new(send_frames, (theirs, sizes.clone()));
        p.start().unwrap();
        let mut exact = vec![0u8; (1 << 20) + 3];
        assert_eq!(ours.recv_bytes_into(&mut exact).unwrap(), exact.len());
        assert!(exact == pattern(0, exact.len()));
        let mut five = [0u8; 5];
        assert_eq!(ours.recv_bytes_into(&mut five).unwrap(), 5);
        assert_eq!(five[..], pattern(1, 5)[..]);
        assert_eq!(p.join().unwrap(), 2);
    });
}
