//! The seed's Manager program: the manager's server holds a list of
//! records; one process appends a record, then another prints them all.
//! An update by any process is seen by all.
//!
//! ```text
//! $ cargo run --example manager_list
//! A New record is added
//!
//! Name: Computers
//! Score: 1
//!
//! Name: Histoty
//! Score: 5
//!
//! Name: Hindi
//! Score: 9
//!
//! Name: English
//! Score: 3
//!
//! ```

use multiproc::{ListProxy, Manager, Process};

type Records = ListProxy<(String, i32)>;

fn print_records(records: Records) {
    for (name, score) in records.iter().expect("read the records") {
        println!("Name: {name}\nScore: {score}\n");
    }
}

fn insert_record((record, records): ((String, i32), Records)) {
    records.append(&record).expect("append");
    println!("A New record is added\n");
}

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manager = Manager::start()?;
    let records = manager.list(vec![
        ("Computers".to_string(), 1),
        ("Histoty".to_string(), 5),
        ("Hindi".to_string(), 9),
    ])?;
    let new_record = ("English".to_string(), 3);
    let mut p1 = Process::new(insert_record, (new_record, records.clone()));
    let mut p2 = Process::new(print_records, records);
    p1.start()?;
    p1.join()?;
    p2.start()?;
    p2.join()?;
    Ok(())
}
