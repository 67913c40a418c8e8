//! A process pool: squares of 0..10 through `map`, then a slower function
//! through `imap_unordered` with a progress display (an `indicatif` bar
//! with `--features progress`, text lines on stderr otherwise). Results
//! finish in any order; they are printed sorted.
//!
//! ```text
//! $ cargo run --example pool
//! squares: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]
//! slow squares (sorted): [0, 1, 4, 9, 16, 25, 36, 49, 64, 81, 100, 121, 144, 169, 196, 225, 256, 289, 324, 361]
//! ```

use std::time::Duration;

use multiproc::Pool;

fn square(x: u64) -> u64 {
    x * x
}

fn slow_square(x: u64) -> u64 {
    // Uneven durations, so results finish out of order.
    std::thread::sleep(Duration::from_millis(20 + (x * 37) % 60));
    x * x
}

#[cfg(feature = "progress")]
fn progress(total: usize) -> impl multiproc::pool::Progress + 'static {
    indicatif::ProgressBar::new(total as u64)
}

#[cfg(not(feature = "progress"))]
fn progress(total: usize) -> impl multiproc::pool::Progress + 'static {
    move |done: usize, _total: Option<usize>| {
        let filled = done * 20 / total.max(1);
        // One line on the terminal, redrawn in place (stderr, so the
        // output checked by the tests stays deterministic).
        eprint!(
            "\r[{}{}] {done}/{total}{}",
            "#".repeat(filled),
            "-".repeat(20 - filled),
            if done == total { "\n" } else { "" }
        );
    }
}

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::new(4)?;

    let squares = pool.map(square, 0..10)?;
    println!("squares: {squares:?}");

    let n = 20;
    let mut slow: Vec<u64> = pool
        .imap_unordered(slow_square, 0..n)?
        .with_progress(progress(n as usize))
        .collect::<Result<_, _>>()?;
    slow.sort_unstable();
    println!("slow squares (sorted): {slow:?}");

    pool.close();
    pool.join()?;
    Ok(())
}
