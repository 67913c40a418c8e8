//! The tutorial's first program: a child process puts
//! `(42, None, "hello")` on a queue; the parent gets it and prints it.
//!
//! Output: `(42, None, "hello")`

use multiproc::Queue;

type Message = (i32, Option<i32>, String);

fn f(q: Queue<Message>) {
    q.put((42, None, "hello".to_string())).unwrap();
}

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let q = Queue::new()?;
    let child = multiproc::spawn(f, q.clone());
    println!("{:?}", q.get()?); // prints "(42, None, "hello")"
    child.join()?;
    Ok(())
}
