//! A remote manager: one program serves shared objects on a TCP address
//! (or a Unix socket path) with an authkey; other programs, started
//! independently, connect and share a named queue and counter through
//! it.
//!
//! ```text
//! $ cargo run --example manager_remote -- serve 127.0.0.1:50000 &
//! serving on 127.0.0.1:50000
//! $ cargo run --example manager_remote -- put 127.0.0.1:50000 hello
//! $ cargo run --example manager_remote -- get 127.0.0.1:50000
//! hello (1 put so far)
//! $ cargo run --example manager_remote -- stop 127.0.0.1:50000
//! ```

use std::time::Duration;

use multiproc::Manager;
use multiproc::manager::ManagerBuilder;

const AUTHKEY: &[u8] = b"change me";

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, address) = match args.as_slice() {
        [mode, address, ..] => (mode.as_str(), address.as_str()),
        _ => {
            eprintln!("usage: manager_remote serve|put|get|stop ADDRESS [MESSAGE]");
            std::process::exit(2);
        }
    };
    match mode {
        "serve" => {
            let server = ManagerBuilder::new()
                .address(address)?
                .authkey(AUTHKEY)
                .bind()?;
            println!("serving on {}", server.address());
            server.serve_forever();
        }
        "put" => {
            let manager = Manager::connect(address, Some(AUTHKEY))?;
            let message = args.get(2).cloned().unwrap_or_else(|| "hello".into());
            manager
                .named("messages")
                .queue::<String>(0)?
                .put(&message)?;
            // Created with 0 by the first program to ask, atomically.
            manager.named("puts").value(0i64)?.add(1)?;
        }
        "get" => {
            let manager = Manager::connect(address, Some(AUTHKEY))?;
            let queue = manager.named("messages").queue::<String>(0)?;
            let message = queue.get_timeout(Duration::from_secs(10))?;
            let puts = manager.named("puts").value(0i64)?.get()?;
            println!("{message} ({puts} put so far)");
        }
        "stop" => Manager::connect(address, Some(AUTHKEY))?.shutdown_server()?,
        other => {
            eprintln!("unknown mode {other}");
            std::process::exit(2);
        }
    }
    Ok(())
}
