//! [`Value`]: the self-describing form in which a manager's server keeps
//! everything it holds, so that any serde type can be stored without being
//! registered, and containers nest.
//!
//! A typed proxy converts at the client: [`to_value`] turns any
//! `T: Serialize` into a `Value` tree and [`from_value`] turns a tree back
//! into any `T: DeserializeOwned`. The mapping follows the usual
//! self-describing conventions (those of JSON, but binary-safe):
//!
//! | Rust | `Value` | Python repr |
//! |---|---|---|
//! | `()`, `None`, unit struct | [`Value::None`] | `None` |
//! | `bool` | [`Value::Bool`] | `True` |
//! | integers (up to 128 bits) | [`Value::Int`] | `1` |
//! | `f32`, `f64` | [`Value::Float`] | `1.5` |
//! | `char`, `String`, unit enum variant | [`Value::Str`] | `'a'` |
//! | bytes (`serialize_bytes`), and any non-empty sequence of `u8` (`Vec<u8>`, `&[u8]`…) | [`Value::Bytes`] | `b'a'` |
//! | `Vec`, slices, sets (of other types, or empty) | [`Value::List`] | `[1, 2]` |
//! | tuples, tuple structs | [`Value::Tuple`] | `(1, 2)` |
//! | maps, structs, other enum variants (`{variant: content}`) | [`Value::Dict`] | `{'a': 1}` |
//!
//! `Some(x)` is stored as `x` itself, so `Some(None)` reads back as `None`.
//! Bytes read back as any sequence of integers. A `Vec<u8>` is stored as
//! one buffer, not a `Value` per byte, though serde still hands it over
//! byte by byte on both conversions; a type that serializes with
//! `serialize_bytes` (such as `serde_bytes::ByteBuf`) is copied whole. A
//! nested list view ([`list_at`](crate::DictProxy::list_at)) does not
//! reach into bytes.
//!
//! ```
//! use multiproc::manager::{from_value, to_value};
//!
//! let v = to_value(&("Computers", 1))?;
//! assert_eq!(v.to_string(), "('Computers', 1)");
//! let back: (String, i32) = from_value(v)?;
//! assert_eq!(back, ("Computers".to_string(), 1));
//! # Ok::<(), multiproc::manager::ConvertError>(())
//! ```

mod de;
mod repr;
mod ser;

use std::cell::Cell;
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A dictionary of values, in insertion order (like Python's `dict`).
pub type Dict = IndexMap<Value, Value>;

/// A self-describing value: the form in which a manager's server keeps
/// everything it holds ([`to_value`] and [`from_value`] convert). Not to be
/// confused with [`multiproc::Value`](crate::Value), a plain value in
/// shared memory.
///
/// Values are ordered and hashed the way Python compares them where that
/// makes sense: numbers compare by magnitude whatever their kind
/// (`Int(1) == Float(1.0)`), sequences and dictionaries lexicographically.
/// Values of different kinds are ordered `None < Bool < numbers < Str <
/// Bytes < List < Tuple < Dict`. NaN equals itself (so it can be a key) and
/// sorts after every other number.
#[derive(Clone, Debug, Default)]
pub enum Value {
    /// Python's `None`: `()`, `Option::None`, unit structs.
    #[default]
    None,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i128),
    /// A floating-point number.
    Float(f64),
    /// A string.
    Str(String),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A list.
    List(Vec<Value>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A dictionary in insertion order.
    Dict(Dict),
}

/// A value could not be converted to or from a [`Value`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConvertError(pub String);

crate::codec::serializer::custom_error!(ConvertError);

/// Converts any serde value to a [`Value`] tree.
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, ConvertError> {
    value.serialize(ser::ValueSerializer)
}

/// Converts a [`Value`] tree to any serde type.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ConvertError> {
    T::deserialize(value)
}

impl Value {
    /// Converts this value to `T` (see [`from_value`]).
    pub fn decode<T: DeserializeOwned>(self) -> Result<T, ConvertError> {
        from_value(self)
    }

    /// A short name of the kind of value, as Python names its type.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "NoneType",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
        }
    }

    /// The value as Python's `repr` prints it: `[('a', 1), None, 2.5]`.
    pub fn repr(&self) -> String {
        let mut s = String::new();
        repr::write_repr(self, &mut s);
        s
    }

    fn rank(&self) -> u8 {
        match self {
            Value::None => 0,
            Value::Bool(_) => 1,
            Value::Int(_) | Value::Float(_) => 2,
            Value::Str(_) => 3,
            Value::Bytes(_) => 4,
            Value::List(_) => 5,
            Value::Tuple(_) => 6,
            Value::Dict(_) => 7,
        }
    }
}

/// Prints the Python repr (see [`Value::repr`]).
impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.repr())
    }
}

/// A float equal to an integer, as that integer.
fn integral(f: f64) -> Option<i128> {
    // 2^127 as f64; every finite float below it in magnitude with no
    // fraction is exactly an i128.
    const LIMIT: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
    (f.fract() == 0.0 && f.abs() < LIMIT).then_some(f as i128)
}

fn cmp_int_float(i: i128, f: f64) -> Ordering {
    if f.is_nan() {
        return Ordering::Less;
    }
    if let Some(j) = integral(f) {
        return i.cmp(&j);
    }
    if f.is_infinite() || f.abs() >= 1e38 {
        return if f > 0.0 {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    // `f` has a fraction, so it lies strictly between floor(f) and the next
    // integer, and floor(f) is exactly an i128.
    if i <= f.floor() as i128 {
        Ordering::Less
    } else {
        Ordering::Greater
    }
}

fn cmp_float(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        use Value::*;
        match (self, other) {
            (None, None) => Ordering::Equal,
            (Bool(a), Bool(b)) => a.cmp(b),
            (Int(a), Int(b)) => a.cmp(b),
            (Float(a), Float(b)) => cmp_float(*a, *b),
            (Int(a), Float(b)) => cmp_int_float(*a, *b),
            (Float(a), Int(b)) => cmp_int_float(*b, *a).reverse(),
            (Str(a), Str(b)) => a.cmp(b),
            (Bytes(a), Bytes(b)) => a.cmp(b),
            (List(a), List(b)) | (Tuple(a), Tuple(b)) => a.cmp(b),
            (Dict(a), Dict(b)) => a.iter().cmp(b.iter()),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.rank().hash(state);
        match self {
            Value::None => {}
            Value::Bool(b) => b.hash(state),
            Value::Int(i) => i.hash(state),
            Value::Float(f) => match integral(*f) {
                Some(i) => i.hash(state),
                Option::None if f.is_nan() => u64::MAX.hash(state),
                Option::None => f.to_bits().hash(state),
            },
            Value::Str(s) => s.hash(state),
            Value::Bytes(b) => b.hash(state),
            Value::List(v) | Value::Tuple(v) => v.hash(state),
            Value::Dict(d) => {
                d.len().hash(state);
                for (k, v) in d {
                    k.hash(state);
                    v.hash(state);
                }
            }
        }
    }
}

// ---- wire form -------------------------------------------------------------
//
// On the manager's connections a `Value` travels as a tagged enum (the
// crate's codec is not self-describing). Decoding is depth-limited so that a hostile,
// deeply nested message cannot overflow the server's stack.

/// Deepest nesting accepted when decoding a value from the wire.
pub const MAX_DEPTH: u32 = 128;

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

#[derive(Serialize)]
enum WireOut<'a> {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(&'a str),
    Bytes(BytesOut<'a>),
    List(&'a [Value]),
    Tuple(&'a [Value]),
    Dict(DictOut<'a>),
}

struct DictOut<'a>(&'a Dict);

impl Serialize for DictOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

#[derive(Deserialize)]
enum WireIn {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Bytes(BytesIn),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Dict(Vec<(Value, Value)>),
}

/// Bytes written whole (`serialize_bytes`); a `&[u8]` would go byte by
/// byte. Postcard writes both the same way (a length, then the bytes).
struct BytesOut<'a>(&'a [u8]);

impl Serialize for BytesOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// Bytes read whole (`deserialize_byte_buf`), not byte by byte as a
/// `Vec<u8>` would be.
struct BytesIn(Vec<u8>);

impl<'de> Deserialize<'de> for BytesIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Bytes;

        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = BytesIn;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }

            fn visit_bytes<E>(self, v: &[u8]) -> Result<BytesIn, E> {
                Ok(BytesIn(v.to_vec()))
            }

            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<BytesIn, E> {
                Ok(BytesIn(v))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<BytesIn, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(BytesIn(out))
            }
        }

        d.deserialize_byte_buf(Bytes)
    }
}

/// The wire form (a tagged enum); see the module's notes.
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::None => WireOut::None,
            Value::Bool(b) => WireOut::Bool(*b),
            Value::Int(i) => WireOut::Int(*i),
            Value::Float(f) => WireOut::Float(*f),
            Value::Str(x) => WireOut::Str(x),
            Value::Bytes(b) => WireOut::Bytes(BytesOut(b)),
            Value::List(v) => WireOut::List(v),
            Value::Tuple(v) => WireOut::Tuple(v),
            Value::Dict(d) => WireOut::Dict(DictOut(d)),
        }
        .serialize(s)
    }
}

/// Reads the wire form, refusing nesting deeper than [`MAX_DEPTH`].
impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let depth = DEPTH.with(|c| {
            let n = c.get() + 1;
            c.set(n);
            n
        });
        let result = if depth > MAX_DEPTH {
            Err(serde::de::Error::custom(format!(
                "value nested deeper than {MAX_DEPTH} levels"
            )))
        } else {
            WireIn::deserialize(d)
        };
        DEPTH.with(|c| c.set(c.get() - 1));
        Ok(match result? {
            WireIn::None => Value::None,
            WireIn::Bool(b) => Value::Bool(b),
            WireIn::Int(i) => Value::Int(i),
            WireIn::Float(f) => Value::Float(f),
            WireIn::Str(s) => Value::Str(s),
            WireIn::Bytes(b) => Value::Bytes(b.0),
            WireIn::List(v) => Value::List(v),
            WireIn::Tuple(v) => Value::Tuple(v),
            WireIn::Dict(pairs) => Value::Dict(pairs.into_iter().collect()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum Shape {
        Dot,
        Circle(f64),
        Rect { w: u32, h: u32 },
        Pair(i8, i8),
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Record {
        name: String,
        score: i32,
        tags: Vec<String>,
        extra: Option<(bool, u64)>,
        shapes: Vec<Shape>,
        map: BTreeMap<String, i64>,
        unit: (),
        ch: char,
    }

    #[test]
    fn round_trips_any_serde_type() {
        let r = Record {
            name: "Histoty".into(),
            score: -5,
            tags: vec!["a".into(), "b'c".into()],
            extra: Some((true, u64::MAX)),
            shapes: vec![
                Shape::Dot,
                Shape::Circle(1.5),
                Shape::Rect { w: 2, h: 3 },
                Shape::Pair(-1, 1),
            ],
            map: [("k".to_string(), 7)].into_iter().collect(),
            unit: (),
            ch: 'é',
        };
        let v = to_value(&r).unwrap();
        let back: Record = from_value(v.clone()).unwrap();
        assert_eq!(back, r);
        // And across the wire.
        let bytes = crate::codec::append_value(&v, Vec::new()).unwrap();
        let w: Value = crate::codec::decode_whole(&bytes).unwrap();
        assert_eq!(w, v);
        assert_eq!(from_value::<Record>(w).unwrap(), r);
    }

    #[test]
    fn numbers_compare_like_python() {
        assert_eq!(Value::Int(1), Value::Float(1.0));
        assert!(Value::Int(1) < Value::Float(1.5));
        assert!(Value::Float(0.5) < Value::Int(1));
        assert!(Value::Int(-3) < Value::Float(-2.5));
        assert!(Value::Float(f64::NAN) > Value::Int(i128::MAX));
        let mut d = Dict::new();
        d.insert(Value::Int(1), Value::Str("one".into()));
        assert!(d.contains_key(&Value::Float(1.0)));
    }

    #[test]
    fn deep_nesting_is_refused_on_the_wire() {
        let mut v = Value::None;
        for _ in 0..(MAX_DEPTH + 5) {
            v = Value::List(vec![v]);
        }
        let bytes = crate::codec::append_value(&v, Vec::new()).unwrap();
        assert!(crate::codec::decode_whole::<Value>(&bytes).is_err());
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Blob {
        name: String,
        data: Vec<u8>,
        chunks: Vec<Vec<u8>>,
        maybe: Option<Vec<u8>>,
        small: [u8; 3],
        words: Vec<u16>,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(tag = "kind")]
    enum Tagged {
        Data { payload: Vec<u8> },
    }

    #[test]
    fn byte_vectors_are_bytes() {
        let v = to_value(&vec![1u8, 2, 255]).unwrap();
        assert!(matches!(&v, Value::Bytes(b) if b == &[1, 2, 255]));
        assert_eq!(v.repr(), "b'\\x01\\x02\\xff'");
        assert_eq!(from_value::<Vec<u8>>(v.clone()).unwrap(), [1, 2, 255]);
        // Other integer sequences stay lists; an empty one too.
        assert!(matches!(to_value(&vec![1u16, 2]).unwrap(), Value::List(_)));
        assert!(matches!(
            to_value(&Vec::<u8>::new()).unwrap(),
            Value::List(_)
        ));
        assert!(
            from_value::<Vec<u8>>(to_value(&Vec::<u8>::new()).unwrap())
                .unwrap()
                .is_empty()
        );
        // Old-style lists of small integers still read as bytes.
        let list = Value::List(vec![Value::Int(7), Value::Int(8)]);
        assert_eq!(from_value::<Vec<u8>>(list).unwrap(), [7, 8]);
        let b = Blob {
            name: "x".into(),
            data: (0..=255).collect(),
            chunks: vec![vec![1], vec![], vec![2, 3]],
            maybe: Some(vec![9; 10]),
            small: [1, 2, 3],
            words: vec![1, 300],
        };
        let v = to_value(&b).unwrap();
        let Value::Dict(d) = &v else {
            panic!("not a dict")
        };
        assert!(matches!(d[&Value::Str("data".into())], Value::Bytes(_)));
        let back: Blob = from_value(v.clone()).unwrap();
        assert_eq!(back, b);
        // On the wire: the variant, the length, the bytes, as before.
        assert_eq!(
            crate::codec::append_value(&Value::Bytes(vec![1, 2, 3]), Vec::new()).unwrap(),
            [5, 3, 1, 2, 3]
        );
        let wire = crate::codec::append_value(&v, Vec::new()).unwrap();
        assert!(wire.len() < 400, "{} bytes on the wire", wire.len());
        let w: Value = crate::codec::decode_whole(&wire).unwrap();
        assert_eq!(from_value::<Blob>(w).unwrap(), b);
        // Through serde's buffering of internally tagged enums.
        let t = Tagged::Data {
            payload: vec![4, 5, 6],
        };
        assert_eq!(from_value::<Tagged>(to_value(&t).unwrap()).unwrap(), t);
        // Bytes still read as a string when they are UTF-8.
        assert_eq!(
            from_value::<String>(Value::Bytes(b"hi".to_vec())).unwrap(),
            "hi"
        );
        assert!(from_value::<String>(Value::Bytes(vec![0xff])).is_err());
        // A byte that does not fit is an error, not a wrap.
        assert!(from_value::<Vec<i8>>(Value::Bytes(vec![200])).is_err());
    }

    #[test]
    fn int_reads_as_float() {
        assert_eq!(from_value::<f64>(Value::Int(3)).unwrap(), 3.0);
        assert!(from_value::<u8>(Value::Int(300)).is_err());
        assert!(from_value::<i32>(Value::Str("x".into())).is_err());
    }
}
