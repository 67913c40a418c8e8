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

use multiproc::{Array, Process, Value};

// The tutorial's literal, not an approximation of PI.
#[allow(clippy::approx_constant)]
fn f((num, arr): (Value<f64>, Array<i32>)) {
    num.set(3.1415927).unwrap();
    for x in arr.lock().unwrap().iter_mut() {
        *x = -*x;
    }
}

pub fn main() -> Result<(), Box<dyn Error>> {
    let num = Value::new(0.0)?;
    let arr = Array::from_iter(0..10)?;

    let mut p = Process::new(f, (num.clone(), arr.clone()));
    p.start()?;
    p.join()?;

    println!("{}", num.get()?);
    println!("{:?}", arr.to_vec()?);
    Ok(())
}
