//! The tour: the seed tutorial's six programs, in its order, each printing
//! what the tutorial shows, then the worker pool.
//!
//! ```text
//! $ cargo run --release --example tour
//! ```

#[path = "csp.rs"]
mod csp;
#[path = "manager_list.rs"]
mod manager_list;
#[path = "namespace.rs"]
mod namespace;
#[path = "pipe.rs"]
mod pipe;
#[path = "pool.rs"]
mod pool;
#[path = "queue.rs"]
mod queue;
#[path = "value_array.rs"]
mod value_array;

type Program = fn() -> Result<(), Box<dyn std::error::Error>>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let programs: [(&str, Program); 7] = [
        ("1. Queue", queue::main),
        ("2. Pipe", pipe::main),
        ("3. Manager (shared list)", manager_list::main),
        ("4. Manager Namespace", namespace::main),
        ("5. Value and Array", value_array::main),
        ("6. CSP", csp::main),
        ("7. Pool (beyond the tutorial)", pool::main),
    ];
    for (title, run) in programs {
        println!("== {title} ==");
        run()?;
        println!();
    }
    Ok(())
}
