//! Reporting how far a job has come: a callback, or (with the cargo
//! feature `progress`) an [`indicatif`] progress bar.

/// Receives a job's progress. Closures `FnMut(done, total)` implement it.
///
/// ```
/// use multiproc::Pool;
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let pool = Pool::new(2)?;
/// let mut seen = Vec::new();
/// let squares = pool
///     .map_async(square, 0..10u64)?
///     .with_progress(move |done, total| seen.push((done, total)))
///     .get()?;
/// assert_eq!(squares[3], 9);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Progress: Send {
    /// `done` tasks of `total` have finished (`total` is `None` when the
    /// input's length is not known in advance).
    fn update(&mut self, done: usize, total: Option<usize>);

    /// The job is over.
    fn finish(&mut self) {}
}

impl<F: FnMut(usize, Option<usize>) + Send> Progress for F {
    fn update(&mut self, done: usize, total: Option<usize>) {
        self(done, total)
    }
}

/// A boxed sink, so that the display can be chosen at run time (a bar on
/// a terminal, plain lines in a log).
///
/// ```
/// use multiproc::pool::Progress;
///
/// let sink: Box<dyn Progress> = Box::new(|done: usize, total: Option<usize>| {
///     eprintln!("{done} of {total:?}");
/// });
/// # let _ = sink;
/// ```
impl Progress for Box<dyn Progress> {
    fn update(&mut self, done: usize, total: Option<usize>) {
        (**self).update(done, total)
    }

    fn finish(&mut self) {
        (**self).finish()
    }
}

/// An `indicatif` bar follows the job: its length is set from the total,
/// its position from the tasks done, and it is finished at the end.
#[cfg(feature = "progress")]
impl Progress for indicatif::ProgressBar {
    fn update(&mut self, done: usize, total: Option<usize>) {
        if let Some(t) = total
            && self.length() != Some(t as u64)
        {
            self.set_length(t as u64);
        }
        self.set_position(done as u64);
    }

    fn finish(&mut self) {
        indicatif::ProgressBar::finish(self);
    }
}
