//! The seed's Pipe program: a child sends `(42, None, "hello")` on its end
//! of a pipe and closes it; the parent receives it, prints it, and joins.
//!
//! ```text
//! $ cargo run --example pipe
//! (42, None, "hello")
//! ```

use multiproc::{Connection, pipe};

fn f(conn: Connection) {
    conn.send(&(42, None::<i32>, "hello")).expect("send");
    conn.close();
}

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (parent_conn, child_conn) = pipe()?;
    let child = multiproc::spawn(f, child_conn);
    let msg: (i32, Option<i32>, String) = parent_conn.recv()?;
    println!("{msg:?}");
    child.join()?;
    Ok(())
}
