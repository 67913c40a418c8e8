//! Rows run in a forked child, for groups that leave threads behind (a
//! Zenoh session's runtime, a manager served from threads): the bench
//! process must stay single-threaded, since the fork rows of the next
//! placement refuse to fork a process with other threads, and every raw
//! floor forks too.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use crate::harness::{BenchResult, Ctx, Figures, Row};
use crate::raw::RawChild;

/// Row-name prefixes of the groups that run in a forked child.
pub const GROUPS: &[&str] = &["cluster.", "manager.python_client."];

/// Whether `row` runs in a forked child.
pub fn wanted(row: &Row) -> bool {
    GROUPS.iter().any(|g| row.name.starts_with(g))
}

/// Runs `row` in a forked child; its figures (or its error, as text) come
/// back over a socket as lines `label<TAB>value`, the first one `ok` with
/// the crate's and the raw floor's figures.
pub fn run(ctx: &Ctx, row: &Row) -> BenchResult<Figures> {
    let (mut ours, mut theirs) = UnixStream::pair()?;
    let child = RawChild::fork_closing(ours.as_fd(), move || {
        let text = match (row.run)(ctx) {
            Ok(f) => {
                let mut s = format!("ok\t{}\t{}\n", f.krate, f.raw);
                for (label, v) in f.extra {
                    s.push_str(&format!("{label}\t{v}\n"));
                }
                s
            }
            Err(e) => format!("error\t{e}\n"),
        };
        theirs
            .write_all(text.as_bytes())
            .expect("report the figures");
    })?;
    let mut text = String::new();
    let read = ours.read_to_string(&mut text);
    child.wait()?;
    read?;
    parse(&text)
}

fn parse(text: &str) -> BenchResult<Figures> {
    let mut lines = text.lines();
    let first = lines.next().ok_or("the forked row reported nothing")?;
    let num = |s: Option<&str>| -> BenchResult<f64> {
        Ok(s.ok_or("a figure is missing")?.parse::<f64>()?)
    };
    let mut fields = first.split('\t');
    match fields.next() {
        Some("ok") => {}
        Some("error") => return Err(fields.collect::<Vec<_>>().join("\t").into()),
        _ => return Err(format!("unexpected report from the forked row: {first}").into()),
    }
    let krate = num(fields.next())?;
    let raw = num(fields.next())?;
    let mut extra = Vec::new();
    for line in lines {
        let (label, v) = line.split_once('\t').ok_or("a malformed figure line")?;
        // Labels are few and the bench process is short-lived.
        let label: &'static str = Box::leak(label.to_owned().into_boxed_str());
        extra.push((label, num(Some(v))?));
    }
    Ok(Figures { krate, raw, extra })
}
