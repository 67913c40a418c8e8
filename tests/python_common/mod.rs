//! Helpers for the tests that talk to a real Python: finding interpreters
//! (pyenv versions and `python3` on PATH, with a printed note for each one
//! that is missing) and running a `python -c` script whose stdout is read
//! line by line.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// One Python interpreter.
#[derive(Clone, Debug)]
pub struct Python {
    /// What the test prints, e.g. `3.8`.
    pub label: String,
    /// The executable.
    pub path: PathBuf,
}

/// The pyenv interpreters of the given minor versions (`"3.8"`, …), plus
/// `python3.N` on PATH when pyenv lacks one. A version found nowhere is
/// reported on stderr as skipped; if none is found, `python3` is used.
pub fn interpreters(versions: &[&str]) -> Vec<Python> {
    let root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")));
    let mut found = Vec::new();
    for &version in versions {
        let from_pyenv = root.as_ref().and_then(|root| {
            let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("versions"))
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n.strip_prefix(version)
                            .is_some_and(|rest| rest.starts_with('.'))
                    })
                })
                .map(|p| p.join("bin").join("python"))
                .filter(|p| p.exists())
                .collect();
            dirs.sort();
            dirs.pop()
        });
        let path = from_pyenv.or_else(|| {
            let name = format!("python{version}");
            works(&PathBuf::from(&name)).then(|| PathBuf::from(name))
        });
        match path {
            Some(path) if works(&path) => found.push(Python {
                label: version.to_string(),
                path,
            }),
            _ => {
                eprintln!("note: Python {version} not found (pyenv or PATH); its cases are skipped")
            }
        }
    }
    if found.is_empty() {
        eprintln!("note: none of Python {versions:?} found; testing python3 on PATH instead");
        found.push(python3());
    }
    found
}

/// `python3` on PATH; panics if there is none (the project's machines have it).
pub fn python3() -> Python {
    let path = PathBuf::from("python3");
    assert!(works(&path), "python3 is required for these tests");
    Python {
        label: "python3".into(),
        path,
    }
}

fn works(path: &PathBuf) -> bool {
    Command::new(path)
        .args(["-c", "import multiprocessing.connection"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Prepended to every script: the interpreter exits as soon as its stdin
/// closes, i.e. when the test process is gone, even if it died without
/// running `Drop` (a watchdog timeout, a kill).
const ORPHAN_GUARD: &str = "import os as _os, threading as _th
def _orphan_guard():
    while _os.read(0, 4096):
        pass
    _os._exit(3)
_th.Thread(target=_orphan_guard, daemon=True).start()
";

/// A running `python -c script args…`; killed and reaped on drop.
pub struct Script {
    child: Child,
    out: BufReader<ChildStdout>,
    /// Held open while the script runs (see [`ORPHAN_GUARD`]).
    _stdin: Option<ChildStdin>,
}

impl Script {
    /// Starts `script` with `args` under `python`.
    pub fn start(python: &Python, script: &str, args: &[&str]) -> Script {
        let mut child = Command::new(&python.path)
            .arg("-c")
            .arg(format!("{ORPHAN_GUARD}{script}"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start python");
        let out = BufReader::new(child.stdout.take().unwrap());
        let stdin = child.stdin.take();
        Script {
            child,
            out,
            _stdin: stdin,
        }
    }

    /// The next line the script prints (without the newline); panics with
    /// the script's stderr if it ended instead.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).expect("read python's stdout");
        if line.is_empty() {
            let mut err = String::new();
            if let Some(mut e) = self.child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("python ended early; its stderr:\n{err}");
        }
        line.trim_end().to_string()
    }

    /// Waits for the script to end and returns whether it succeeded, with
    /// its stderr.
    pub fn finish(mut self) -> (bool, String) {
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let ok = self.child.wait().is_ok_and(|s| s.success());
        (ok, err)
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
