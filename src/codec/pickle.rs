//! The pickle codec: serde values as Python pickles, so a [`Connection`]
//! can exchange ordinary data with Python's `conn.send(obj)` /
//! `conn.recv()` (see [`Connection::send_pickle`]).
//!
//! Encoding and decoding are done by the `serde-pickle` crate. Writing uses
//! protocol 3, the newest that crate writes; Python's unpickler detects the
//! protocol by itself, so every Python 3 reads it (`multiprocessing` itself
//! writes protocol 4, which is read here, as are 2, 3 and 5).
//!
//! # What decoding refuses
//!
//! Nothing is ever executed: this side has no classes to call. But a pickle
//! that names a class or a function (`GLOBAL`, `STACK_GLOBAL`, `INST`) is
//! the classic pickle attack on a Python receiver and, on this side, would
//! decode to an arbitrary stand-in, so before `serde-pickle` sees the bytes
//! a scanner walks every opcode and refuses with a typed [`PickleError`]:
//!
//! - any global outside the few builtins that only rebuild data (`set`,
//!   `frozenset`, `bytearray`, `list`, `int`, and `_codecs.encode` for
//!   protocol-2 bytes): [`PickleError::Global`] names it;
//! - persistent ids, the extension registry and out-of-band buffers:
//!   [`PickleError::Unsupported`];
//! - a declared length beyond the bytes that are actually there, truncation,
//!   stack underflow, a missing memo entry, bytes after `STOP`:
//!   [`PickleError::Malformed`], before anything is allocated for it;
//! - nesting deeper than [`MAX_DEPTH`] (decoding and dropping recurse):
//!   [`PickleError::TooDeep`];
//! - a value whose expanded size (the memo lets a small pickle refer to the
//!   same list many times, and decoding copies it each time) exceeds 64
//!   times the pickle plus 1 MiB: [`PickleError::TooLarge`];
//! - a self-containing value: [`PickleError::Recursive`];
//! - integers written as text with more than 4300 digits (Python's own
//!   limit; parsing them is quadratic): [`PickleError::TooLarge`].
//!
//! An integer that does not fit the requested Rust type is
//! [`PickleError::IntOverflow`] (a Python `int` has no size limit; decode
//! into [`Value`] with [`value_from_slice`] to keep it as a big integer).
//! Integers pass through `i64` on the way: one from 2^63 to 2^64 - 1 is
//! an overflow even for a `u64` target.
//!
//! [`Connection`]: crate::Connection
//! [`Connection::send_pickle`]: crate::Connection::send_pickle

use std::collections::HashMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_pickle::{DeOptions, ErrorCode, SerOptions};
pub use serde_pickle::{HashableValue, Value};

/// Nesting deeper than this is refused.
pub const MAX_DEPTH: usize = 128;

/// The protocol written by [`to_vec`].
pub const PROTOCOL: u8 = 3;

/// Longest integer written as decimal text that is accepted (as Python's
/// `sys.get_int_max_str_digits()` default).
const MAX_TEXT_DIGITS: usize = 4300;

/// Bytes counted for each decoded value beside its payload.
const NODE_WEIGHT: u64 = 32;

pub use crate::error::PickleError;

/// Pickles `value` (protocol [`PROTOCOL`]). Structs become dicts keyed by
/// field name, tuples, tuple structs and fixed-size arrays tuples,
/// sequences (`Vec`, slices, sets) lists, maps
/// dicts, `()` and `None` Python's `None`; [`Value`] gives sets, bytes and
/// big integers.
///
/// ```
/// let bytes = multiproc::codec::pickle::to_vec(&(1, "two", [3.0]))?;
/// let back: (i32, String, Vec<f64>) = multiproc::codec::pickle::from_slice(&bytes)?;
/// assert_eq!(back, (1, "two".into(), vec![3.0]));
/// # Ok::<(), multiproc::codec::pickle::PickleError>(())
/// ```
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, PickleError> {
    serde_pickle::to_vec(&value, SerOptions::new()).map_err(|e| PickleError::Encode(e.to_string()))
}

/// Unpickles `bytes` (protocols 2 to 5) into `T`, refusing anything but
/// plain data (see the module documentation).
///
/// ```
/// use multiproc::codec::pickle::{PickleError, from_slice};
///
/// // pickle.dumps(None, protocol=4)
/// let none: Option<i32> = from_slice(b"\x80\x04N.")?;
/// assert_eq!(none, None);
/// // pickle.dumps(os.system) names a global: refused, never called.
/// let attack = b"\x80\x04\x95\x11\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94\x93\x94.";
/// assert!(matches!(from_slice::<i32>(attack), Err(PickleError::Global { .. })));
/// # Ok::<(), PickleError>(())
/// ```
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, PickleError> {
    scan(bytes, &data_global)?;
    decode(bytes)
}

/// Pickles a dynamic [`Value`] (which keeps Python's distinctions
/// between lists, tuples, sets and frozensets, bytes, and big integers).
///
/// ```
/// use multiproc::codec::pickle::{HashableValue, Value, value_from_slice, value_to_vec};
///
/// let set = Value::Set([HashableValue::I64(1), HashableValue::I64(2)].into());
/// assert_eq!(value_from_slice(&value_to_vec(&set)?)?, set);
/// # Ok::<(), multiproc::codec::pickle::PickleError>(())
/// ```
pub fn value_to_vec(value: &Value) -> Result<Vec<u8>, PickleError> {
    serde_pickle::value_to_vec(value, SerOptions::new())
        .map_err(|e| PickleError::Encode(e.to_string()))
}

/// Unpickles `bytes` into a dynamic [`Value`], refusing what
/// [`from_slice`] refuses. Integers of any size are kept.
pub fn value_from_slice(bytes: &[u8]) -> Result<Value, PickleError> {
    scan(bytes, &data_global)?;
    serde_pickle::value_from_slice(bytes, de_options()).map_err(map_error)
}

/// Unpickles `bytes` as a [`Value`] allowing, beside plain data, the globals for which
/// `allow(module, name)` holds: they are never instantiated, an instance of
/// one decodes as its constructor arguments or its state (a tuple or a dict).
/// Returns the value and every global named, in order.
pub(crate) fn value_from_slice_allowing(
    bytes: &[u8],
    allow: &dyn Fn(&str, &str) -> bool,
) -> Result<(Value, Vec<(String, String)>), PickleError> {
    let globals = scan(bytes, &|m, n| data_global(m, n) || allow(m, n))?;
    let value = serde_pickle::value_from_slice(bytes, de_options()).map_err(map_error)?;
    Ok((value, globals))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, PickleError> {
    // `keep_restore_state`: an allowed class instance decodes as its
    // arguments/state rather than an empty dict. Strings of protocol 2
    // (`STRING` opcodes, Python 2 `str`) are decoded as UTF-8.
    serde_pickle::from_slice(bytes, de_options()).map_err(map_error)
}

fn de_options() -> DeOptions {
    DeOptions::new().keep_restore_state().decode_strings()
}

fn map_error(e: serde_pickle::Error) -> PickleError {
    match e {
        serde_pickle::Error::Syntax(ErrorCode::InvalidValue(ref s)) if s == "integer too large" => {
            PickleError::IntOverflow("a Python int beyond 64 bits".into())
        }
        serde_pickle::Error::Syntax(ErrorCode::Structure(s))
            if s.starts_with("invalid value: integer") =>
        {
            PickleError::IntOverflow(s)
        }
        serde_pickle::Error::Syntax(ErrorCode::Recursive)
        | serde_pickle::Error::Eval(ErrorCode::Recursive, _) => PickleError::Recursive,
        serde_pickle::Error::Syntax(code) => PickleError::Type(code.to_string()),
        other => PickleError::Malformed(other.to_string()),
    }
}

/// The globals that only rebuild plain data, and that `serde-pickle` reads
/// as such.
fn data_global(module: &str, name: &str) -> bool {
    matches!(
        (module, name),
        (
            "builtins" | "__builtin__",
            "set" | "frozenset" | "bytearray" | "list" | "int"
        ) | ("_codecs", "encode")
    )
}

/// One value on the scanner's stack: a scalar, or a container (or object)
/// in the node table, which later opcodes may fill.
#[derive(Clone, Copy)]
enum Item {
    /// A scalar of `weight` bytes; for a string, where its bytes are (kept
    /// for `STACK_GLOBAL`).
    Leaf {
        weight: u64,
        text: Option<(usize, usize)>,
    },
    /// Index into the node table.
    Node(usize),
}

/// A container or an object.
struct Node {
    /// Values it contains (shared ones are copied when decoded).
    kids: Vec<Item>,
}

/// Walks the opcodes of `bytes` without building anything: checks every
/// length against the input, refuses globals for which `allow` fails and
/// the opcodes that cannot be read as data, then bounds the depth and the
/// expanded size of the result. Returns the globals named.
fn scan(
    bytes: &[u8],
    allow: &dyn Fn(&str, &str) -> bool,
) -> Result<Vec<(String, String)>, PickleError> {
    let mut s = Scanner {
        bytes,
        pos: 0,
        nodes: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        globals: Vec::new(),
    };
    let root = s.run(allow)?;
    s.bound(root, bytes.len())?;
    Ok(s.globals)
}

struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
    nodes: Vec<Node>,
    stack: Vec<Item>,
    marks: Vec<usize>,
    memo: HashMap<u64, Item>,
    globals: Vec<(String, String)>,
}

fn malformed<T>(why: impl Into<String>) -> Result<T, PickleError> {
    Err(PickleError::Malformed(why.into()))
}

impl<'a> Scanner<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let rest = self.bytes.len() - self.pos;
        if n > rest {
            return malformed(format!(
                "at offset {}: {n} bytes declared, {rest} left",
                self.pos
            ));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn uint(&mut self, n: usize) -> Result<u64, PickleError> {
        let b = self.take(n)?;
        Ok(b.iter()
            .rev()
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    /// A signed 32-bit length (`BINSTRING`, `LONG4`).
    fn len_i32(&mut self) -> Result<usize, PickleError> {
        let v = self.uint(4)? as u32 as i32;
        usize::try_from(v).or_else(|_| malformed("negative length"))
    }

    fn len_u(&mut self, n: usize) -> Result<usize, PickleError> {
        let v = self.uint(n)?;
        usize::try_from(v).or_else(|_| malformed("length beyond the address space"))
    }

    fn line(&mut self) -> Result<&'a [u8], PickleError> {
        let rest: &'a [u8] = &self.bytes[self.pos..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(end) => {
                self.pos += end + 1;
                Ok(&rest[..end])
            }
            None => malformed("unterminated line"),
        }
    }

    /// Pushes a new container holding `kids`.
    fn push_node(&mut self, kids: Vec<Item>) {
        self.nodes.push(Node { kids });
        self.stack.push(Item::Node(self.nodes.len() - 1));
    }

    fn push_atom(&mut self, payload: usize) {
        self.stack.push(Item::Leaf {
            weight: NODE_WEIGHT + payload as u64,
            text: None,
        });
    }

    /// Pushes the string or bytes that end at the current position.
    fn push_text(&mut self, raw_len: usize) {
        self.stack.push(Item::Leaf {
            weight: NODE_WEIGHT + raw_len as u64,
            text: Some((self.pos - raw_len, raw_len)),
        });
    }

    /// The string an item holds, if it is a short UTF-8 one.
    fn text(&self, item: Item) -> Option<String> {
        match item {
            Item::Leaf {
                text: Some((start, len)),
                ..
            } if len <= 256 => std::str::from_utf8(&self.bytes[start..start + len])
                .ok()
                .map(str::to_owned),
            _ => None,
        }
    }

    fn pop(&mut self) -> Result<Item, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return malformed(format!("stack underflow at offset {}", self.pos));
        }
        Ok(self.stack.pop().expect("checked above"))
    }

    /// The container on top of the stack, for the opcodes that fill it.
    fn top(&mut self) -> Result<&mut Node, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        match self.stack.last() {
            Some(&Item::Node(id)) if self.stack.len() > floor => Ok(&mut self.nodes[id]),
            Some(_) if self.stack.len() > floor => {
                malformed(format!("adding items to a scalar at offset {}", self.pos))
            }
            _ => malformed(format!("stack underflow at offset {}", self.pos)),
        }
    }

    fn pop_mark(&mut self) -> Result<Vec<Item>, PickleError> {
        match self.marks.pop() {
            Some(m) if m <= self.stack.len() => Ok(self.stack.split_off(m)),
            _ => malformed(format!("no mark at offset {}", self.pos)),
        }
    }

    fn global(
        &mut self,
        module: String,
        name: String,
        allow: &dyn Fn(&str, &str) -> bool,
    ) -> Result<(), PickleError> {
        if !allow(&module, &name) {
            return Err(PickleError::Global { module, name });
        }
        self.globals.push((module, name));
        Ok(())
    }

    fn text_int(&mut self) -> Result<(), PickleError> {
        let line = self.line()?;
        if line.len() > MAX_TEXT_DIGITS + 2 {
            return Err(PickleError::TooLarge(format!(
                "an integer of {} digits written as text",
                line.len()
            )));
        }
        self.push_atom(line.len());
        Ok(())
    }

    /// The key of a memo opcode: on a line of its own (`PUT`, `GET`), in
    /// one byte (`BINPUT`, `BINGET`) or four (`LONG_BINPUT`,
    /// `LONG_BINGET`), or the next free one (`MEMOIZE`).
    fn memo_key(&mut self, op: u8) -> Result<u64, PickleError> {
        match op {
            b'p' | b'g' => parse_key(self.line()?),
            b'q' | b'h' => self.uint(1),
            b'r' | b'j' => self.uint(4),
            _ => Ok(self.memo.len() as u64),
        }
    }

    fn memo_put(&mut self, key: u64) -> Result<(), PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return malformed("memoizing an empty stack");
        }
        let top = *self.stack.last().expect("checked above");
        self.memo.insert(key, top);
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> Result<(), PickleError> {
        match self.memo.get(&key) {
            Some(&item) => {
                self.stack.push(item);
                Ok(())
            }
            None => malformed(format!("memo entry {key} is missing")),
        }
    }

    fn run(&mut self, allow: &dyn Fn(&str, &str) -> bool) -> Result<Item, PickleError> {
        loop {
            let op = self.take(1).or_else(|_| malformed("no STOP opcode"))?[0];
            match op {
                // Framing and protocol.
                0x80 => {
                    let proto = self.uint(1)?;
                    if proto > 5 {
                        return Err(PickleError::Unsupported(format!("protocol {proto}")));
                    }
                }
                0x95 => {
                    self.take(8)?;
                }
                b'.' => {
                    if self.pos != self.bytes.len() {
                        return malformed("bytes after STOP");
                    }
                    if !self.marks.is_empty() || self.stack.len() != 1 {
                        return malformed("STOP with an unbalanced stack");
                    }
                    return Ok(self.stack[0]);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.pop()?;
                    self.stack.extend([top, top]);
                }
                // Atoms.
                b'N' | 0x88 | 0x89 => self.push_atom(0),
                b'I' | b'L' => self.text_int()?,
                b'F' => {
                    self.line()?;
                    self.push_atom(0);
                }
                // BININT1, BININT2, BININT, BINFLOAT: a number of fixed size.
                b'K' | b'M' | b'J' | b'G' => {
                    let size = match op {
                        b'K' => 1,
                        b'M' => 2,
                        b'J' => 4,
                        _ => 8,
                    };
                    self.take(size)?;
                    self.push_atom(0);
                }
                0x8a => {
                    let n = self.len_u(1)?;
                    self.take(n)?;
                    self.push_atom(n);
                }
                0x8b => {
                    let n = self.len_i32()?;
                    self.take(n)?;
                    self.push_atom(n);
                }
                b'S' | b'V' => {
                    let n = self.line()?.len();
                    self.push_atom(n);
                }
                b'T' => {
                    let n = self.len_i32()?;
                    self.take(n)?;
                    self.push_text(n);
                }
                b'U' | b'C' | 0x8c => {
                    let n = self.len_u(1)?;
                    self.take(n)?;
                    self.push_text(n);
                }
                b'X' | b'B' => {
                    let n = self.len_u(4)?;
                    self.take(n)?;
                    self.push_text(n);
                }
                0x8d | 0x8e | 0x96 => {
                    let n = self.len_u(8)?;
                    self.take(n)?;
                    self.push_text(n);
                }
                // Containers.
                b')' | b']' | b'}' | 0x8f => self.push_node(Vec::new()),
                b'a' => {
                    let v = self.pop()?;
                    self.top()?.kids.push(v);
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.top()?.kids.extend([k, v]);
                }
                b'e' | b'u' | 0x90 => {
                    let items = self.pop_mark()?;
                    self.top()?.kids.extend(items);
                }
                b't' | b'l' | b'd' | 0x91 => {
                    let items = self.pop_mark()?;
                    self.push_node(items);
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push_node(items);
                }
                // Memo.
                b'p' | b'q' | b'r' | 0x94 => {
                    let key = self.memo_key(op)?;
                    self.memo_put(key)?;
                }
                b'g' | b'h' | b'j' => {
                    let key = self.memo_key(op)?;
                    self.memo_get(key)?;
                }
                // Globals and objects.
                b'c' | b'i' => {
                    let module = String::from_utf8_lossy(self.line()?).into_owned();
                    let name = String::from_utf8_lossy(self.line()?).into_owned();
                    self.global(module, name, allow)?;
                    let kids = if op == b'i' {
                        self.pop_mark()?
                    } else {
                        Vec::new()
                    };
                    self.push_node(kids);
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (self.text(module), self.text(name)) {
                        (Some(module), Some(name)) => self.global(module, name, allow)?,
                        _ => return malformed("STACK_GLOBAL without two strings"),
                    }
                    self.push_node(Vec::new());
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    self.pop()?;
                    self.push_node(vec![args]);
                }
                0x92 => {
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    self.pop()?;
                    self.push_node(vec![args, kwargs]);
                }
                b'o' => {
                    let mut items = self.pop_mark()?;
                    if items.is_empty() {
                        return malformed("OBJ without a class");
                    }
                    items.remove(0);
                    self.push_node(items);
                }
                b'b' => {
                    let state = self.pop()?;
                    self.pop()?;
                    self.stack.push(state);
                }
                b'P' | b'Q' => return Err(PickleError::Unsupported("persistent ids".into())),
                0x82..=0x84 => {
                    return Err(PickleError::Unsupported("the extension registry".into()));
                }
                0x97 | 0x98 => {
                    return Err(PickleError::Unsupported("out-of-band buffers".into()));
                }
                other => {
                    return malformed(format!(
                        "unknown opcode 0x{other:02x} at offset {}",
                        self.pos - 1
                    ));
                }
            }
        }
    }

    /// Checks depth, cycles and the expanded size of `root`.
    fn bound(&self, root: Item, input: usize) -> Result<(), PickleError> {
        let budget = 64 * input as u64 + (1 << 20);
        let root = match root {
            Item::Leaf { weight, .. } if weight > budget => {
                return Err(PickleError::TooLarge(format!("{weight} bytes")));
            }
            Item::Leaf { .. } => return Ok(()),
            Item::Node(id) => id,
        };
        // Per node: 0 unvisited, 1 on the path, 2 done; with its weight
        // (bytes once every shared reference is copied) and depth.
        let mut state = vec![0u8; self.nodes.len()];
        let mut weight = vec![0u64; self.nodes.len()];
        let mut depth = vec![0usize; self.nodes.len()];
        // (node, next kid index)
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        state[root] = 1;
        while let Some(&mut (id, ref mut next)) = path.last_mut() {
            if let Some(&kid) = self.nodes[id].kids.get(*next) {
                *next += 1;
                if let Item::Node(kid) = kid {
                    match state[kid] {
                        0 => {
                            if path.len() >= MAX_DEPTH {
                                return Err(PickleError::TooDeep { max: MAX_DEPTH });
                            }
                            state[kid] = 1;
                            path.push((kid, 0));
                        }
                        1 => return Err(PickleError::Recursive),
                        _ => {}
                    }
                }
                continue;
            }
            path.pop();
            let mut w = NODE_WEIGHT;
            let mut d = 1;
            for &kid in &self.nodes[id].kids {
                match kid {
                    Item::Leaf { weight: kw, .. } => {
                        w = w.saturating_add(kw);
                        d = d.max(2);
                    }
                    Item::Node(k) => {
                        w = w.saturating_add(weight[k]);
                        d = d.max(depth[k] + 1);
                    }
                }
            }
            if w > budget {
                return Err(PickleError::TooLarge(format!(
                    "about {w} bytes once expanded, from a pickle of {input}"
                )));
            }
            if d > MAX_DEPTH {
                return Err(PickleError::TooDeep { max: MAX_DEPTH });
            }
            weight[id] = w;
            depth[id] = d;
            state[id] = 2;
        }
        Ok(())
    }
}

fn parse_key(line: &[u8]) -> Result<u64, PickleError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .map_or_else(|| malformed("bad memo key"), Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_declared_lengths_are_refused_before_allocating() {
        // BINBYTES of 4 GiB - 1 with three bytes behind it.
        let mut p = b"\x80\x04B\xff\xff\xff\xffabc".to_vec();
        assert!(matches!(
            from_slice::<Value>(&p),
            Err(PickleError::Malformed(_))
        ));
        p = b"\x80\x04\x8e\x00\x00\x00\x00\x01\x00\x00\x00abc.".to_vec();
        assert!(matches!(
            from_slice::<Value>(&p),
            Err(PickleError::Malformed(_))
        ));
    }

    #[test]
    fn deep_nesting_is_refused() {
        // [[[...]]] 10 000 deep: push the lists, then append each into the one below.
        let mut p = b"\x80\x04".to_vec();
        p.extend(std::iter::repeat_n(b']', 10_000));
        p.extend(std::iter::repeat_n(b'a', 9_999));
        p.push(b'.');
        assert!(matches!(
            from_slice::<Value>(&p),
            Err(PickleError::TooDeep { .. })
        ));
    }

    #[test]
    fn shared_references_cannot_blow_up() {
        // l0 = [0]*100; l1 = [l0]*100; ... l8: each level refers to the
        // previous one 100 times through the memo: 100^9 values expanded.
        let mut p = b"\x80\x04](".to_vec();
        p.extend(b"K\x00".repeat(100));
        p.extend_from_slice(b"e\x94");
        for level in 0..8u8 {
            p.extend_from_slice(b"0](");
            p.extend([b'h', level].repeat(100));
            p.extend_from_slice(b"e\x94");
        }
        p.push(b'.');
        assert!(matches!(
            from_slice::<Value>(&p),
            Err(PickleError::TooLarge(_))
        ));
    }

    #[test]
    fn self_containing_values_are_refused() {
        // l = []; l.append(l)
        let p = b"\x80\x04]\x94h\x00a.";
        assert_eq!(from_slice::<Value>(p), Err(PickleError::Recursive));
    }
}
