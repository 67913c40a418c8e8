//! The tutorial's fifth program: a `Value` and an `Array` in shared memory.
//!
//! A child process sets the value to 3.1415927 and negates every element;
//! the parent then prints both:
//!
//! ```text
//! 3.1415927
//! [0, -1, -2, -3, -4, -5, -6, -7, -8, -9]
//! ```

use std::error::Error;
use std::io::Write;

use multiproc::{Array, Process, Value};

// The tutorial's literal, not an approximation of PI.
#[allow(clippy::approx_constant)]
fn f((num, arr): (Value<f64>, Array<i32>)) {
    num.set(3.1415927).unwrap();
    for x in arr.get_lock().unwrap().iter_mut() {
        *x = -*x;
    }
}

/// Runs the program, printing to `out`.
pub fn run(out: &mut impl Write) -> Result<(), Box<dyn Error>> {
    let num = Value::new(0.0)?;
    let arr = Array::from_iter(0..10)?;

    let mut p = Process::new(f, (num.clone(), arr.clone()));
    p.start()?;
    p.join()?;

    writeln!(out, "{}", num.get()?)?;
    writeln!(out, "{:?}", arr.to_vec()?)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    run(&mut std::io::stdout())
}
