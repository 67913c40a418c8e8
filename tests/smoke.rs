use multiproc::*;

fn square(x: u64) -> u64 {
    x * x
}

fn talk(conn: Connection) -> String {
    conn.send(&(42, None::<i32>, "hello")).unwrap();
    let back: String = conn.recv().unwrap();
    back
}

#[test]
fn spawn_square() {
    let mut p = Process::new(square, 12);
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 144);
    assert_eq!(p.exitcode(), Some(0));
}

#[test]
fn spawn_pipe() {
    let (a, b) = pipe().unwrap();
    let mut p = Process::new(talk, b);
    p.start().unwrap();
    let m: (i32, Option<i32>, String) = a.recv().unwrap();
    assert_eq!(m.2, "hello");
    a.send("back").unwrap();
    assert_eq!(p.join().unwrap(), "back");
}
