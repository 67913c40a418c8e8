//! A queue of a user's own serde struct between two child processes: one
//! puts orders, the other reads them with a `for` loop, which ends by
//! itself once the producer is done.
//!
//! Output:
//! ```text
//! order 1: 3 × apple
//! order 2: 1 × pear
//! order 3: 12 × plum
//! 16 items in all
//! ```

use multiproc::{Process, Queue};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: u32,
    item: String,
    quantity: u32,
}

fn produce(orders: Queue<Order>) {
    for (id, (item, quantity)) in [("apple", 3), ("pear", 1), ("plum", 12)]
        .into_iter()
        .enumerate()
    {
        let order = Order {
            id: id as u32 + 1,
            item: item.to_string(),
            quantity,
        };
        orders.put(order).unwrap();
    }
} // `orders` is dropped here: the consumer learns that this producer is done

fn consume(orders: Queue<Order>) -> u32 {
    orders.close(); // this process only reads: its handle is no producer
    let mut total = 0;
    for order in &orders {
        println!("order {}: {} × {}", order.id, order.quantity, order.item);
        total += order.quantity;
    }
    total // the loop ended: every producer is gone and the queue is empty
}

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let orders = Queue::new()?;
    let mut consumer = Process::new(consume, orders.clone());
    let mut producer = Process::new(produce, orders); // the parent keeps no handle
    consumer.start()?;
    producer.start()?;
    producer.join()?;
    println!("{} items in all", consumer.join()?);
    Ok(())
}
