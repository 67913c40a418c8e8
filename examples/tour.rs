//! The tour: the seed tutorial's six programs, in its order, each printing
//! what the tutorial shows. Mechanisms not built yet say so.
//!
//! ```text
//! $ cargo run --release --example tour
//! ```

#[path = "pipe.rs"]
mod pipe;
#[path = "value_array.rs"]
mod value_array;

type Program = fn() -> Result<(), Box<dyn std::error::Error>>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let programs: [(&str, Option<Program>); 6] = [
        ("1. Queue", None),
        ("2. Pipe", Some(pipe::main)),
        ("3. Manager (shared list)", None),
        ("4. Manager Namespace", None),
        ("5. Value and Array", Some(value_array::main)),
        ("6. CSP", None),
    ];
    for (title, program) in programs {
        println!("== {title} ==");
        match program {
            Some(run) => run()?,
            None => println!("(not in multiproc yet)"),
        }
        println!();
    }
    Ok(())
}
