//! A process pool: squares of 0..10 through `map`, then a slower function
//! through `imap_unordered` with a progress display on stderr: a bar on a
//! terminal (an `indicatif` bar with `--features progress`), plain lines
//! when stderr is a file or a pipe. Results finish in any order; they are
//! printed sorted.
//!
//! ```text
//! $ cargo run --example pool
//! squares: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]
//! slow squares (sorted): [0, 1, 4, 9, 16, 25, 36, 49, 64, 81, 100, 121, 144, 169, 196, 225, 256, 289, 324, 361]
//! ```

use std::io::IsTerminal;
use std::time::Duration;

use multiproc::Pool;
use multiproc::pool::Progress;

fn square(x: u64) -> u64 {
    x * x
}

fn slow_square(x: u64) -> u64 {
    // Uneven durations, so results finish out of order.
    std::thread::sleep(Duration::from_millis(20 + (x * 37) % 60));
    x * x
}

/// The progress display on stderr (so the output checked by the tests stays
/// deterministic): a bar redrawn in place on a terminal (`indicatif`'s with
/// `--features progress`), plain lines otherwise (a log file, a pipe).
fn progress(total: usize) -> Box<dyn Progress> {
    if !std::io::stderr().is_terminal() {
        return Box::new(move |done: usize, _total: Option<usize>| {
            eprintln!("slow squares: {done}/{total} done");
        });
    }
    #[cfg(feature = "progress")]
    return Box::new(indicatif::ProgressBar::new(total as u64));
    #[cfg(not(feature = "progress"))]
    Box::new(move |done: usize, _total: Option<usize>| {
        let filled = done * 20 / total.max(1);
        eprint!(
            "\r[{}{}] {done}/{total}{}",
            "#".repeat(filled),
            "-".repeat(20 - filled),
            if done == total { "\n" } else { "" }
        );
    })
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
