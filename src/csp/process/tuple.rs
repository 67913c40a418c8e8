//! Networks of processes with different return types: [`Parallel`],
//! implemented for tuples of [`CspProcess`]es, and the [`parallel!`]
//! macro over it.
//!
//! The launch order is the one of [`spawn`](super::spawn): every OS
//! process starts before any thread does (so the fork start method works
//! from a single-threaded parent), then every process is waited for, and
//! the first error in tuple order is returned once all have ended.
//!
//! [`parallel!`]: crate::parallel!

use super::{CspProcess, Launched, Name, Started};
use crate::csp::error::ProcessError;
use crate::csp::process::Outcome;

/// A process of a tuple, as it goes through launch: not launched yet,
/// launched, then started (watched).
enum Slot<R> {
    Waiting(CspProcess<R>),
    Launched(Name, Result<Launched<R>, ProcessError>),
    Taken,
}

impl<R: Send + 'static> Slot<R> {
    /// Launches it if it runs as an OS process (`os == true`) or as a
    /// thread (`os == false`).
    fn launch_if(&mut self, os: bool) {
        if let Slot::Waiting(p) = self
            && p.method.is_some() == os
        {
            let Slot::Waiting(p) = std::mem::replace(self, Slot::Taken) else {
                unreachable!("matched just above")
            };
            let (name, launched) = p.launch();
            *self = Slot::Launched(name, launched);
        }
    }

    fn start(self) -> Started<R> {
        match self {
            Slot::Launched(name, launched) => Started::from(name, launched),
            Slot::Waiting(_) | Slot::Taken => unreachable!("every slot is launched first"),
        }
    }
}

/// A fixed set of CSP processes whose bodies may return different types:
/// a tuple `(CspProcess<A>, CspProcess<B>, ...)` of up to 12 processes.
///
/// [`parallel`](Self::parallel) runs them like [`csp::parallel`] and
/// returns a tuple of their [`Outcome`]s, each with its own type. The
/// [`parallel!`](crate::parallel!) macro calls it without importing the
/// trait. For any number of processes of one type, use
/// [`csp::parallel`] on an array or `Vec`.
///
/// ```
/// use multiproc::csp::{Channel, ChannelError, CspProcess, Outcome, Parallel, Reader, Writer};
///
/// fn numbers(out: Writer<u32>) -> Result<(), ChannelError> {
///     for i in 1..=4 {
///         out.write(&i)?;
///     }
///     Ok(()) // dropping `out` retires it
/// }
///
/// fn total(inp: Reader<u32>) -> Result<u64, ChannelError> {
///     let mut sum = 0;
///     while let Ok(x) = inp.read() {
///         sum += u64::from(x);
///     }
///     Ok(sum)
/// }
///
/// let ch = Channel::new()?;
/// let (sent, sum) = (
///     CspProcess::os_process(numbers, ch.writer()),
///     CspProcess::thread(total, ch.reader()),
/// )
///     .parallel()?;
/// assert_eq!(sent, Outcome::Done(()));
/// assert_eq!(sum.value(), Some(10));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// [`csp::parallel`]: super::parallel
pub trait Parallel: sealed::Sealed {
    /// The outcomes, one per process, in the same order.
    type Outcomes;

    /// Runs the processes concurrently and waits for all of them; their
    /// outcomes, or the first error in tuple order once every process has
    /// ended.
    fn parallel(self) -> Result<Self::Outcomes, ProcessError>;
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! tuple_impl {
    ($(($p:ident, $r:ident)),+) => {
        impl<$($r: Send + 'static),+> sealed::Sealed for ($(CspProcess<$r>,)+) {}

        impl<$($r: Send + 'static),+> Parallel for ($(CspProcess<$r>,)+) {
            type Outcomes = ($(Outcome<$r>,)+);

            fn parallel(self) -> Result<Self::Outcomes, ProcessError> {
                let ($($p,)+) = self;
                let _place = super::place(false $(|| ($p.light && $p.method.is_none()))+);
                $(let mut $p = Slot::Waiting($p);)+
                $($p.launch_if(true);)+
                $($p.launch_if(false);)+
                $(let $p = $p.start();)+
                $(let $p = $p.wait();)+
                Ok(($($p?,)+))
            }
        }
    };
}

/// Implements [`Parallel`] for every tuple length from 1 up to the list
/// given: `tuple_impls!(a, b, c)` implements it for `(a,)`, `(a, b)` and
/// `(a, b, c)`.
macro_rules! tuple_impls {
    (@ [$($done:tt),+]) => {
        tuple_impl!($($done),+);
    };
    (@ [$($done:tt),+] $next:tt $(, $rest:tt)*) => {
        tuple_impl!($($done),+);
        tuple_impls!(@ [$($done,)+ $next] $($rest),*);
    };
    ($first:tt $(, $rest:tt)*) => {
        tuple_impls!(@ [$first] $($rest),*);
    };
}

tuple_impls!(
    (a, A),
    (b, B),
    (c, C),
    (d, D),
    (e, E),
    (f, F),
    (g, G),
    (h, H),
    (i, I),
    (j, J),
    (k, K),
    (l, L)
);

/// Runs CSP processes of different return types concurrently and waits
/// for all of them: `parallel!(a, b, c)` is
/// [`Parallel::parallel`](crate::csp::Parallel::parallel) on the tuple
/// `(a, b, c)`, and returns `Result<(Outcome<A>, Outcome<B>, Outcome<C>),
/// ProcessError>`.
///
/// ```
/// use multiproc::csp::{Channel, ChannelError, CspProcess, Reader, Writer};
///
/// let ch = Channel::<String>::new()?;
/// let (sent, got) = multiproc::parallel!(
///     CspProcess::thread(|w: Writer<String>| w.write(&"hi".to_string()), ch.writer()),
///     CspProcess::thread(|r: Reader<String>| r.read(), ch.reader()),
/// )?;
/// assert_eq!(sent.value(), Some(()));
/// assert_eq!(got.value().as_deref(), Some("hi"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[macro_export]
macro_rules! parallel {
    ($($p:expr),+ $(,)?) => {
        $crate::csp::Parallel::parallel(($($p,)+))
    };
}
