//! Process start + join.
//!
//! * `process.spawn`: `Process::new(f, ()).start(); join()` (spawn start
//!   method: re-execute this bench binary) against the floor
//!   `posix_spawn` of the same binary, which exits at the top of `main`
//!   (see [`EXIT_AT_ONCE`]), + `waitpid`.
//! * `process.fork`: the same with `StartMethod::Fork` against
//!   `fork()` + `_exit(0)` + `waitpid`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::time::Instant;

use multiproc::{Process, StartMethod};

use crate::harness::{BenchResult, Ctx, Figures, Row, Unit, alternate, micros_per_op};
use crate::raw;

/// Set in the environment of the raw floor's re-executed child: `main`
/// exits at once when it sees it.
pub const EXIT_AT_ONCE: &str = "MULTIPROC_BENCH_EXIT_AT_ONCE";

pub fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "process.fork",
            unit: Unit::Micros,
            run: fork,
            python: true,
            round_trip: false,
        },
        Row {
            name: "process.spawn",
            unit: Unit::Micros,
            run: spawn,
            python: true,
            round_trip: false,
        },
    ]
}

fn nothing(_: ()) {}

fn crate_start_join(method: StartMethod) -> BenchResult<f64> {
    let t0 = Instant::now();
    let mut p = Process::new(nothing, ()).start_method(method);
    p.start()?;
    p.join()?;
    Ok(micros_per_op(t0, 1))
}

fn spawn(ctx: &Ctx) -> BenchResult<Figures> {
    let raw = RawSpawn::new()?;
    alternate(
        ctx.pick(1, 5),
        ctx.pick(5, 61),
        || crate_start_join(StartMethod::Spawn),
        || raw.start_join(),
    )
}

fn fork(ctx: &Ctx) -> BenchResult<Figures> {
    alternate(
        ctx.pick(2, 20),
        ctx.pick(10, 301),
        || crate_start_join(StartMethod::Fork),
        raw_fork_join,
    )
}

fn raw_fork_join() -> BenchResult<f64> {
    let t0 = Instant::now();
    // SAFETY: the bench process is single-threaded; the child only calls
    // _exit, which is async-signal-safe.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => return Err(std::io::Error::last_os_error().into()),
        // SAFETY: _exit has no preconditions.
        0 => unsafe { libc::_exit(0) },
        _ => {}
    }
    raw::check_status(raw::waitpid(pid)?)?;
    Ok(micros_per_op(t0, 1))
}

/// `posix_spawn("/proc/self/exe")` with the environment prepared once,
/// plus [`EXIT_AT_ONCE`].
pub struct RawSpawn {
    path: CString,
    _env: Vec<CString>,
    argv: [*mut libc::c_char; 2],
    envp: Vec<*mut libc::c_char>,
}

impl RawSpawn {
    pub fn new() -> BenchResult<Self> {
        let path = CString::new("/proc/self/exe")?;
        let mut env: Vec<CString> = std::env::vars_os()
            .filter(|(k, _)| k.as_bytes() != EXIT_AT_ONCE.as_bytes())
            .filter_map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                CString::new(kv).ok()
            })
            .collect();
        env.push(CString::new(format!("{EXIT_AT_ONCE}=1"))?);
        let mut envp: Vec<*mut libc::c_char> = env.iter().map(|s| s.as_ptr() as *mut _).collect();
        envp.push(std::ptr::null_mut());
        let argv = [path.as_ptr() as *mut _, std::ptr::null_mut()];
        Ok(RawSpawn {
            path,
            _env: env,
            argv,
            envp,
        })
    }

    pub fn start_join(&self) -> BenchResult<f64> {
        let t0 = Instant::now();
        let pid = self.start()?;
        Self::join(pid)?;
        Ok(micros_per_op(t0, 1))
    }

    /// Starts a copy of this binary that exits at once; returns its pid.
    pub fn start(&self) -> BenchResult<i32> {
        let mut pid: libc::pid_t = 0;
        // SAFETY: `path` is NUL-terminated; `argv` and `envp` are
        // NULL-terminated arrays of NUL-terminated strings owned by `self`
        // (the CStrings in `path` and `_env` do not move while it lives).
        let rc = unsafe {
            libc::posix_spawn(
                &mut pid,
                self.path.as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                self.argv.as_ptr(),
                self.envp.as_ptr(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc).into());
        }
        Ok(pid)
    }

    /// Reaps a child [`start`](Self::start)ed; an error unless it exited
    /// with status 0.
    pub fn join(pid: i32) -> BenchResult<()> {
        Ok(raw::check_status(raw::waitpid(pid)?)?)
    }
}
