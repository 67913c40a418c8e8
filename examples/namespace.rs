//! The seed's Namespace program: a manager's Namespace shares named
//! attributes between processes; a child adds 5 to `x` and multiplies `y`
//! by 10. Here the arithmetic runs on the server, atomically.
//!
//! ```text
//! $ cargo run --example namespace
//! before Namespace(x=1, y=1)
//! after Namespace(x=6, y=10)
//! ```

use multiproc::{Manager, Namespace, Process};

fn mng_na_sp(using_ns: Namespace) {
    using_ns.add("x", 5).expect("x += 5");
    using_ns.mul("y", 10).expect("y *= 10");
}

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manager = Manager::start()?;
    let using_ns = manager.namespace()?;
    using_ns.set("x", &1)?;
    using_ns.set("y", &1)?;
    println!("before {using_ns}");
    let mut p = Process::new(mng_na_sp, using_ns.clone());
    p.start()?;
    p.join()?;
    println!("after {using_ns}");
    Ok(())
}
