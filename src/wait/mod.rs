//! Waiting: how long a wait may last.
//!
//! [`Deadline`] is the one place where a timeout becomes a point in time;
//! every blocking call of the crate turns its timeout into one here, so
//! that all of them follow the same rule for a timeout too long to
//! represent (it means no limit).

mod deadline;

pub(crate) use deadline::Deadline;
