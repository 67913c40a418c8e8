//! Go's unbuffered channels beside the lightweight CSP rows: the programs
//! in `benches/go/` (`commstime.go`, `ring.go`, the same networks as
//! `csp_light.rs`), built with the `go` command into `target/go/` (once:
//! rebuilt only when the source is newer than the binary; `GOCACHE` and
//! `GOPATH` under `target/go/` too, so nothing is written elsewhere) and
//! run as separate processes that time themselves and print nanoseconds
//! per communication or per hop.
//!
//! They run with `GOMAXPROCS=1`: a network of lightweight processes runs
//! on one worker thread, so Go gets one thread for its goroutines too
//! (its fastest setting for these networks). Where `go` is missing the Go
//! figure is left out and the row prints a note saying so.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::BenchResult;

/// A built Go program of `benches/go/`.
#[derive(Clone, Debug)]
pub struct GoProgram(PathBuf);

/// Where build products go: the `target/` directory this bench binary
/// runs from (`target/<profile>/deps/compare-…`), else the crate's.
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .nth(3)
                .filter(|t| t.join("CACHEDIR.TAG").exists())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Builds `benches/go/<name>.go` (or reuses the binary built from the
/// same source); `Ok(None)` with a printed note when there is no `go`.
pub fn build(name: &str) -> BenchResult<Option<GoProgram>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/go")
        .join(format!("{name}.go"));
    let dir = target_dir().join("go");
    let bin = dir.join(name);
    let fresh = match (std::fs::metadata(&src), std::fs::metadata(&bin)) {
        (Ok(s), Ok(b)) => b.modified()? >= s.modified()?,
        _ => false,
    };
    if fresh {
        return Ok(Some(GoProgram(bin)));
    }
    let out = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .env("GOCACHE", dir.join("cache"))
        .env("GOPATH", dir.join("path"))
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .output();
    match out {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!(
                "# go not found ({e}): the Go figure of the {name} row is skipped (Debian: apt install golang)"
            );
            Ok(None)
        }
        Err(e) => Err(format!("go build {name}: {e}").into()),
        Ok(o) if !o.status.success() => Err(format!(
            "go build {name}: {}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )
        .into()),
        Ok(_) => Ok(Some(GoProgram(bin))),
    }
}

impl GoProgram {
    /// Runs the program with `args` on one Go thread; the figure it printed.
    pub fn run(&self, args: &[u64]) -> BenchResult<f64> {
        let out = Command::new(&self.0)
            .args(args.iter().map(u64::to_string))
            .env("GOMAXPROCS", "1")
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "{}: {}: {}",
                self.0.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .trim()
            .parse::<f64>()
            .map_err(|e| format!("{}: printed {text:?}: {e}", self.0.display()))?)
    }
}
