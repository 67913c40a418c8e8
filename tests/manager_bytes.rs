//! Byte vectors through a manager: a `Vec<u8>` (alone or as a struct
//! field) round-trips through a managed list, dict and namespace, written
//! by a child process (both start methods) and read back by the parent,
//! and is stored as bytes (Python's `bytes`), not as a list of integers.

mod common;

use common::{both, ensure, join, start};
use multiproc::*;
use serde::{Deserialize, Serialize};

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Packet {
    id: u32,
    payload: Vec<u8>,
    parts: Vec<Vec<u8>>,
    checksum: Option<Vec<u8>>,
}

fn packet(n: usize) -> Packet {
    Packet {
        id: n as u32,
        payload: common::pattern(n),
        parts: vec![vec![1, 2, 3], Vec::new(), common::pattern(100)],
        checksum: Some(vec![0xde, 0xad]),
    }
}

const MIB: usize = 1 << 20;

type Shared = (
    ListProxy<Vec<u8>>,
    DictProxy<String, Vec<u8>>,
    Namespace,
    ListProxy<Packet>,
);

fn writer((list, dict, ns, packets): Shared) -> Result<(), String> {
    let big = common::pattern(MIB);
    list.append(&big).map_err(err)?;
    list.append(&Vec::new()).map_err(err)?;
    list.append(&vec![0u8, 255]).map_err(err)?;
    dict.insert(&"big".to_string(), &big).map_err(err)?;
    dict.insert(&"small".to_string(), &b"abc".to_vec())
        .map_err(err)?;
    ns.set("data", &big).map_err(err)?;
    ns.set("empty", &Vec::<u8>::new()).map_err(err)?;
    packets.append(&packet(MIB)).map_err(err)?;
    packets.append(&packet(0)).map_err(err)?;
    Ok(())
}

fn bytes_round_trip(fork: bool) -> Result<(), String> {
    let m = Manager::start().map_err(err)?;
    let list = m.list::<Vec<u8>>([]).map_err(err)?;
    let dict = m.dict::<String, Vec<u8>>([]).map_err(err)?;
    let ns = m.namespace().map_err(err)?;
    let packets = m.list::<Packet>([]).map_err(err)?;
    let mut p = start(
        writer,
        (list.clone(), dict.clone(), ns.clone(), packets.clone()),
        fork,
    )?;
    join(&mut p)??;
    let big = common::pattern(MIB);
    ensure(list.get(0).map_err(err)? == big, "list: 1 MiB differs")?;
    ensure(list.get(1).map_err(err)?.is_empty(), "list: empty differs")?;
    ensure(list.get(2).map_err(err)? == [0, 255], "list: small differs")?;
    ensure(list.len().map_err(err)? == 3, "list length")?;
    ensure(
        list.to_vec().map_err(err)? == vec![big.clone(), Vec::new(), vec![0, 255]],
        "list: to_vec differs",
    )?;
    ensure(list.contains(&vec![0, 255]).map_err(err)?, "list: contains")?;
    ensure(
        dict.get(&"big".into()).map_err(err)? == Some(big.clone()),
        "dict: 1 MiB differs",
    )?;
    ensure(
        dict.get(&"small".into()).map_err(err)? == Some(b"abc".to_vec()),
        "dict: small differs",
    )?;
    ensure(
        ns.get::<Vec<u8>>("data").map_err(err)? == big,
        "namespace: 1 MiB differs",
    )?;
    ensure(
        ns.get::<Vec<u8>>("empty").map_err(err)?.is_empty(),
        "namespace: empty differs",
    )?;
    ensure(
        packets.get(0).map_err(err)? == packet(MIB),
        "struct with byte fields: 1 MiB packet differs",
    )?;
    ensure(
        packets.get(1).map_err(err)? == packet(0),
        "empty packet differs",
    )?;
    // Stored as Python's bytes: the server's repr says so.
    let small = m.dict::<String, Vec<u8>>([]).map_err(err)?;
    small.insert(&"k".into(), &b"abc".to_vec()).map_err(err)?;
    ensure(
        small.to_string() == "{'k': b'abc'}",
        format!("dict repr {small}"),
    )?;
    // bytes + bytes on the server, as in Python.
    ns.set("grow", &b"ab".to_vec()).map_err(err)?;
    ns.add("grow", b"cd".to_vec()).map_err(err)?;
    ensure(
        ns.get::<Vec<u8>>("grow").map_err(err)? == b"abcd",
        "bytes + bytes",
    )
}

#[test]
fn byte_vectors_round_trip_through_list_dict_and_namespace() {
    both(bytes_round_trip);
}
