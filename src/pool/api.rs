//! The pool methods that [`Pool`](super::Pool) and a cluster pool share,
//! written once over [`Submit`]: how a map, a starmap or an imap is cut
//! into chunks and handed over. Each pool implements `Submit` for its own
//! engine (worker processes here, a cluster driver there); its public
//! methods, with their own documentation, call these.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::PoolError;
use super::star::StarFn;

/// A task's argument: travels to a worker and back (for a retry).
pub(crate) trait Arg: Serialize + DeserializeOwned + Send + 'static {}
impl<A: Serialize + DeserializeOwned + Send + 'static> Arg for A {}

/// A task's value: travels back from a worker.
pub(crate) trait Ret: Serialize + DeserializeOwned {}
impl<R: Serialize + DeserializeOwned> Ret for R {}

/// An imap's input, read one chunk at a time: the next (at most)
/// `chunksize` items, or `None` when the input is exhausted.
pub(crate) type Chunks<A> = Box<dyn FnMut() -> Option<Vec<A>> + Send>;

/// What a pool does with work cut into chunks.
pub(crate) trait Submit {
    /// A map's handle.
    type Map<R>;
    /// An imap's iterator.
    type Imap<R>;

    /// The number of workers the default chunk size is made for.
    fn workers(&self) -> usize;

    /// Submits `f` over `items`, `chunksize` items per chunk.
    fn submit_map<A: Arg, R: Ret>(
        &self,
        f: fn(A) -> R,
        items: Vec<A>,
        chunksize: usize,
    ) -> Result<Self::Map<R>, PoolError>;

    /// Submits `f` over what `items` yields, `chunksize` per chunk. A pool
    /// that can reads the input a chunk at a time rather than holding it
    /// whole; by default it is collected for
    /// [`submit_map`](Self::submit_map).
    fn submit_map_iter<A: Arg, R: Ret>(
        &self,
        f: fn(A) -> R,
        items: impl Iterator<Item = A>,
        chunksize: usize,
    ) -> Result<Self::Map<R>, PoolError> {
        self.submit_map(f, items.collect(), chunksize)
    }

    /// Runs `f` over what `items` yields, `chunksize` per chunk, and waits
    /// for the values (a blocking `map`), reading the input while the
    /// first chunks run; or hands `items` back untouched when this pool
    /// has no such path (the caller then submits the map and waits on its
    /// handle).
    fn map_waiting<A: Arg, R: Ret, I: Iterator<Item = A>>(
        &self,
        _f: fn(A) -> R,
        items: I,
        _chunksize: usize,
    ) -> Result<Result<Vec<R>, PoolError>, I> {
        Err(items)
    }

    /// Submits `f` over argument tuples, `chunksize` per chunk.
    fn submit_star<F: StarFn<T>, T: Serialize>(
        &self,
        f: F,
        items: Vec<T>,
        chunksize: usize,
    ) -> Result<Self::Map<F::Output>, PoolError>;

    /// Opens an imap of `f` over the chunks `input` gives (`total` items in
    /// all, when known).
    fn open_imap<A: Arg, R: Ret>(
        &self,
        f: fn(A) -> R,
        input: Chunks<A>,
        ordered: bool,
        total: Option<usize>,
    ) -> Result<Self::Imap<R>, PoolError>;
}

/// Python's default chunk size: the input split into about four chunks per
/// worker.
pub(crate) fn default_chunksize(len: usize, workers: usize) -> usize {
    len.div_ceil(workers.max(1) * 4).max(1)
}

/// The id for a new job in a pool's table (counting up from `next`), or
/// [`PoolError::Closed`] once the pool takes no new work.
pub(crate) fn next_job_id(next: &mut u64, closed: bool) -> Result<u64, PoolError> {
    if closed {
        return Err(PoolError::Closed);
    }
    let id = *next;
    *next += 1;
    Ok(id)
}

fn check_chunksize(chunksize: usize) -> Result<usize, PoolError> {
    if chunksize == 0 {
        Err(PoolError::Invalid("the chunk size must be at least 1"))
    } else {
        Ok(chunksize)
    }
}

/// `map_async`: the default chunk size.
pub(crate) fn map_async<P: Submit, A: Arg, R: Ret>(
    pool: &P,
    f: fn(A) -> R,
    items: impl IntoIterator<Item = A>,
) -> Result<P::Map<R>, PoolError> {
    let items = items.into_iter();
    // An input that knows its length is read a chunk at a time.
    if let (lo, Some(hi)) = items.size_hint()
        && lo == hi
    {
        let chunksize = default_chunksize(lo, pool.workers());
        return pool.submit_map_iter(f, items, chunksize);
    }
    let items: Vec<A> = items.collect();
    let chunksize = default_chunksize(items.len(), pool.workers());
    pool.submit_map(f, items, chunksize)
}

/// `map`: the default chunk size, the input read while the pool runs
/// (see [`Submit::map_waiting`]) when its length is known; otherwise
/// `items` back, for `map_async`.
pub(crate) fn map_blocking<P: Submit, A: Arg, R: Ret, I: Iterator<Item = A>>(
    pool: &P,
    f: fn(A) -> R,
    items: I,
) -> Result<Result<Vec<R>, PoolError>, I> {
    match items.size_hint() {
        (lo, Some(hi)) if lo == hi => {
            let chunksize = default_chunksize(lo, pool.workers());
            pool.map_waiting(f, items, chunksize)
        }
        _ => Err(items),
    }
}

/// `map_chunked`: as [`map_blocking`], with a chunk size of the caller's.
pub(crate) fn map_chunked_blocking<P: Submit, A: Arg, R: Ret, I: Iterator<Item = A>>(
    pool: &P,
    f: fn(A) -> R,
    items: I,
    chunksize: usize,
) -> Result<Result<Vec<R>, PoolError>, I> {
    match check_chunksize(chunksize) {
        Ok(chunksize) => pool.map_waiting(f, items, chunksize),
        Err(e) => Ok(Err(e)),
    }
}

/// `map_async_chunked`: a chunk size of the caller's.
pub(crate) fn map_async_chunked<P: Submit, A: Arg, R: Ret>(
    pool: &P,
    f: fn(A) -> R,
    items: impl IntoIterator<Item = A>,
    chunksize: usize,
) -> Result<P::Map<R>, PoolError> {
    let chunksize = check_chunksize(chunksize)?;
    pool.submit_map_iter(f, items.into_iter(), chunksize)
}

/// `starmap_async`: the default chunk size.
pub(crate) fn starmap_async<P: Submit, F: StarFn<T>, T: Serialize>(
    pool: &P,
    f: F,
    items: impl IntoIterator<Item = T>,
) -> Result<P::Map<F::Output>, PoolError> {
    let items: Vec<T> = items.into_iter().collect();
    let chunksize = default_chunksize(items.len(), pool.workers());
    pool.submit_star(f, items, chunksize)
}

/// `imap` and its variants: reads `items` lazily, `chunksize` at a time.
pub(crate) fn imap<P: Submit, A: Arg, R: Ret, I>(
    pool: &P,
    f: fn(A) -> R,
    items: I,
    chunksize: usize,
    ordered: bool,
) -> Result<P::Imap<R>, PoolError>
where
    I: IntoIterator<Item = A>,
    I::IntoIter: Send + 'static,
{
    let chunksize = check_chunksize(chunksize)?;
    let mut iter = items.into_iter();
    let total = match iter.size_hint() {
        (lo, Some(hi)) if lo == hi => Some(lo),
        _ => None,
    };
    let input: Chunks<A> = Box::new(move || {
        let chunk: Vec<A> = iter.by_ref().take(chunksize).collect();
        (!chunk.is_empty()).then_some(chunk)
    });
    pool.open_imap(f, input, ordered, total)
}

/// The public methods that [`Pool`](super::Pool) and a cluster pool share,
/// written once: one home for the pool API, so the local and the cluster
/// pool cannot drift apart. Expanded inside each pool's `impl` block; the
/// pool names its handle types (map, apply, imap), what one chunk is (for
/// the `_chunked` docs), and the documentation of the methods whose text or
/// examples differ between the two pools. Each method is a call into this
/// module over the pool's [`Submit`].
macro_rules! submit_methods {
    (
        map: $map:ident, apply: $apply:ident, imap: $imap:ident, chunk: $per:literal;
        $(#[$map_doc:meta])* map;
        $(#[$map_async_doc:meta])* map_async;
        $(#[$starmap_doc:meta])* starmap;
        $(#[$apply_doc:meta])* apply;
        $(#[$imap_doc:meta])* imap;
        $(#[$unordered_doc:meta])* imap_unordered;
    ) => {
        $(#[$map_doc])*
        pub fn map<A, R>(
            &self,
            f: fn(A) -> R,
            items: impl IntoIterator<Item = A>,
        ) -> Result<Vec<R>, $crate::pool::PoolError>
        where
            A: ::serde::Serialize + ::serde::de::DeserializeOwned + Send + 'static,
            R: ::serde::Serialize + ::serde::de::DeserializeOwned,
        {
            match $crate::pool::api::map_blocking(self, f, items.into_iter()) {
                Ok(values) => values,
                Err(items) => self.map_async(f, items)?.into_values(),
            }
        }

        #[doc = concat!("Like [`map`](Self::map) with `chunksize` ", $per, ".")]
        pub fn map_chunked<A, R>(
            &self,
            f: fn(A) -> R,
            items: impl IntoIterator<Item = A>,
            chunksize: usize,
        ) -> Result<Vec<R>, $crate::pool::PoolError>
        where
            A: ::serde::Serialize + ::serde::de::DeserializeOwned + Send + 'static,
            R: ::serde::Serialize + ::serde::de::DeserializeOwned,
        {
            match $crate::pool::api::map_chunked_blocking(self, f, items.into_iter(), chunksize) {
                Ok(values) => values,
                Err(items) => self.map_async_chunked(f, items, chunksize)?.into_values(),
            }
        }

        $(#[$map_async_doc])*
        pub fn map_async<A, R>(
            &self,
            f: fn(A) -> R,
            items: impl IntoIterator<Item = A>,
        ) -> Result<$map<R>, $crate::pool::PoolError>
        where
            A: ::serde::Serialize + ::serde::de::DeserializeOwned + Send + 'static,
            R: ::serde::Serialize + ::serde::de::DeserializeOwned,
        {
            $crate::pool::api::map_async(self, f, items)
        }

        #[doc = concat!("Like [`map_async`](Self::map_async) with `chunksize` ", $per, ".")]
        pub fn map_async_chunked<A, R>(
            &self,
            f: fn(A) -> R,
            items: impl IntoIterator<Item = A>,
            chunksize: usize,
        ) -> Result<$map<R>, $crate::pool::PoolError>
        where
            A: ::serde::Serialize + ::serde::de::DeserializeOwned + Send + 'static,
            R: ::serde::Serialize + ::serde::de::DeserializeOwned,
        {
            $crate::pool::api::map_async_chunked(self, f, items, chunksize)
        }

        $(#[$starmap_doc])*
        pub fn starmap<F, T>(
            &self,
            f: F,
            items: impl IntoIterator<Item = T>,
        ) -> Result<Vec<F::Output>, $crate::pool::PoolError>
        where
            F: $crate::pool::StarFn<T>,
            T: ::serde::Serialize,
        {
            self.starmap_async(f, items)?.into_values()
        }

        /// Submits a [`starmap`](Self::starmap) without waiting.
        pub fn starmap_async<F, T>(
            &self,
            f: F,
            items: impl IntoIterator<Item = T>,
        ) -> Result<$map<F::Output>, $crate::pool::PoolError>
        where
            F: $crate::pool::StarFn<T>,
            T: ::serde::Serialize,
        {
            $crate::pool::api::starmap_async(self, f, items)
        }

        $(#[$apply_doc])*
        pub fn apply<A, R>(&self, f: fn(A) -> R, args: A) -> Result<R, $crate::pool::PoolError>
        where
            A: ::serde::Serialize + ::serde::de::DeserializeOwned + Send + 'static,
            R: ::serde::Serialize + ::serde::de::DeserializeOwned,
        {
            self.apply_async(f, args)?.into_value()
        }

        /// Submits `f(args)` without waiting (Python's `apply_async`).
        pub fn apply_async<A, R>(
            &self,
            f: fn(A) -> R,
            args: A,
        ) -> Result<$apply<R>, $crate::pool::PoolError>
        where
            A: ::serde::Serialize + ::serde::de::DeserializeOwned + Send + 'static,
            R: ::serde::Serialize + ::serde::de::DeserializeOwned,
        {
            let job = $crate::pool::api::Submit::submit_map(self, f, vec![args], 1)?;
            Ok($apply::new(job))
        }

        $crate::pool::api::submit_methods!(@imap $imap, $(#[$imap_doc])* imap, 1, true);
        $crate::pool::api::submit_methods!(@imap $imap,
            #[doc = concat!("Like [`imap`](Self::imap) with `chunksize` ", $per, ".")]
            imap_chunked, chunksize, true);
        $crate::pool::api::submit_methods!(@imap $imap,
            $(#[$unordered_doc])* imap_unordered, 1, false);
        $crate::pool::api::submit_methods!(@imap $imap,
            #[doc = concat!(
                "Like [`imap_unordered`](Self::imap_unordered) with `chunksize` ", $per, "."
            )]
            imap_unordered_chunked, chunksize, false);
    };
    // One imap method: chunk size 1, or a `chunksize` parameter.
    (@imap $imap:ident, $(#[$doc:meta])* $name:ident, 1, $ordered:literal) => {
        $(#[$doc])*
        pub fn $name<A, R, I>(&self, f: fn(A) -> R, items: I) -> Result<$imap<R>, $crate::pool::PoolError>
        where
            A: ::serde::Serialize + ::serde::de::DeserializeOwned + Send + 'static,
            R: ::serde::Serialize + ::serde::de::DeserializeOwned,
            I: IntoIterator<Item = A>,
            I::IntoIter: Send + 'static,
        {
            $crate::pool::api::imap(self, f, items, 1, $ordered)
        }
    };
    (@imap $imap:ident, $(#[$doc:meta])* $name:ident, chunksize, $ordered:literal) => {
        $(#[$doc])*
        pub fn $name<A, R, I>(
            &self,
            f: fn(A) -> R,
            items: I,
            chunksize: usize,
        ) -> Result<$imap<R>, $crate::pool::PoolError>
        where
            A: ::serde::Serialize + ::serde::de::DeserializeOwned + Send + 'static,
            R: ::serde::Serialize + ::serde::de::DeserializeOwned,
            I: IntoIterator<Item = A>,
            I::IntoIter: Send + 'static,
        {
            $crate::pool::api::imap(self, f, items, chunksize, $ordered)
        }
    };
}
pub(crate) use submit_methods;
