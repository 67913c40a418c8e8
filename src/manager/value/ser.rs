//! `T: Serialize` → [`Value`]: a serde `Serializer` that builds the tree.

use serde::Serialize;
use serde::ser;
use std::any::Any;

use crate::codec::serializer::{scalar_methods, seq_like, serializer, struct_like};

use super::{ConvertError, Dict, Value};

type R = Result<Value, ConvertError>;

/// Builds a [`Value`] from any serde value.
pub(super) struct ValueSerializer;

fn variant(name: &str, content: Value) -> Value {
    let mut d = Dict::with_capacity(1);
    d.insert(Value::Str(name.to_string()), content);
    Value::Dict(d)
}

impl ser::Serializer for ValueSerializer {
    type Ok = Value;
    type Error = ConvertError;
    type SerializeSeq = SeqBuilder;
    type SerializeTuple = SeqBuilder;
    type SerializeTupleStruct = SeqBuilder;
    type SerializeTupleVariant = SeqBuilder;
    type SerializeMap = MapBuilder;
    type SerializeStruct = MapBuilder;
    type SerializeStructVariant = MapBuilder;

    fn serialize_bool(self, v: bool) -> R {
        Ok(Value::Bool(v))
    }
    scalar_methods!(v => Ok(Value::Int(v.into()));
        serialize_i8(i8), serialize_i16(i16), serialize_i32(i32), serialize_i64(i64),
        serialize_u8(u8), serialize_u16(u16), serialize_u32(u32), serialize_u64(u64));
    fn serialize_i128(self, v: i128) -> R {
        Ok(Value::Int(v))
    }
    fn serialize_u128(self, v: u128) -> R {
        i128::try_from(v)
            .map(Value::Int)
            .map_err(|_| ConvertError(format!("integer {v} does not fit in 128 signed bits")))
    }
    fn serialize_f32(self, v: f32) -> R {
        Ok(Value::Float(v.into()))
    }
    fn serialize_f64(self, v: f64) -> R {
        Ok(Value::Float(v))
    }
    fn serialize_char(self, v: char) -> R {
        Ok(Value::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> R {
        Ok(Value::Str(v.to_string()))
    }
    fn serialize_bytes(self, v: &[u8]) -> R {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn serialize_none(self) -> R {
        Ok(Value::None)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_unit(self) -> R {
        Ok(Value::None)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> R {
        Ok(Value::None)
    }
    fn serialize_unit_variant(self, _name: &'static str, _index: u32, variant: &'static str) -> R {
        Ok(Value::Str(variant.to_string()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _name: &'static str, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant_name: &'static str,
        value: &T,
    ) -> R {
        Ok(variant(variant_name, value.serialize(self)?))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder, ConvertError> {
        Ok(SeqBuilder::new(len, false, None))
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder, ConvertError> {
        Ok(SeqBuilder::new(Some(len), true, None))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<SeqBuilder, ConvertError> {
        Ok(SeqBuilder::new(Some(len), true, None))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<SeqBuilder, ConvertError> {
        Ok(SeqBuilder::new(Some(len), true, Some(variant)))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<MapBuilder, ConvertError> {
        Ok(MapBuilder::new(len, None))
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<MapBuilder, ConvertError> {
        Ok(MapBuilder::new(Some(len), None))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<MapBuilder, ConvertError> {
        Ok(MapBuilder::new(Some(len), Some(variant)))
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

/// Collects the elements of a sequence, tuple or tuple variant.
///
/// A sequence whose elements are all `u8` (a `Vec<u8>`, `&[u8]`,
/// `VecDeque<u8>`…) becomes [`Value::Bytes`], not a list of integers: one
/// buffer instead of a `Value` per byte, hundreds of times cheaper to
/// build, send and store. An empty one stays an empty list (nothing says
/// it holds bytes); both read back as a `Vec<u8>`.
pub(super) struct SeqBuilder {
    items: Vec<Value>,
    /// The bytes so far, while every element of a sequence was a `u8`.
    bytes: Option<Vec<u8>>,
    tuple: bool,
    variant: Option<&'static str>,
}

impl SeqBuilder {
    fn new(len: Option<usize>, tuple: bool, variant: Option<&'static str>) -> Self {
        SeqBuilder {
            items: Vec::new(),
            bytes: (!tuple).then(|| Vec::with_capacity(len.unwrap_or(0).min(1 << 24))),
            tuple,
            variant,
        }
    }
    fn element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ConvertError> {
        if let Some(bytes) = &mut self.bytes {
            if let Ok(b) = v.serialize(ByteProbe) {
                bytes.push(b);
                return Ok(());
            }
            // Not a byte sequence after all: the bytes so far are integers.
            let bytes = self.bytes.take().unwrap_or_default();
            self.items = bytes.into_iter().map(|b| Value::Int(b.into())).collect();
        }
        self.items.push(v.serialize(ValueSerializer)?);
        Ok(())
    }
    fn finish(self) -> R {
        if let Some(bytes) = self.bytes
            && !bytes.is_empty()
        {
            return Ok(Value::Bytes(bytes));
        }
        let v = if self.tuple {
            Value::Tuple(self.items)
        } else {
            Value::List(self.items)
        };
        Ok(match self.variant {
            Some(name) => variant(name, v),
            None => v,
        })
    }
}

seq_like!(SeqBuilder => Value, ConvertError);

/// Answers `Ok(byte)` for a `u8` and `Err` for anything else: how a
/// sequence tells that its elements are bytes.
struct ByteProbe;

/// [`ByteProbe`]'s answer for anything that is not a `u8`.
#[derive(Debug)]
struct NotByte;

impl std::fmt::Display for NotByte {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a byte")
    }
}

impl std::error::Error for NotByte {}

impl ser::Error for NotByte {
    fn custom<T: std::fmt::Display>(_msg: T) -> Self {
        NotByte
    }
}

type No = ser::Impossible<u8, NotByte>;

serializer!(ByteProbe => Ok = u8, Error = NotByte, Compound = No;
    scalar v => (&v as &dyn Any).downcast_ref::<u8>().copied().ok_or(NotByte),
    unit => Err(NotByte),
    wrapped _ => Err(NotByte),
    compound => Err(NotByte),
);

/// Collects the entries of a map, struct or struct variant.
pub(super) struct MapBuilder {
    map: Dict,
    key: Option<Value>,
    variant: Option<&'static str>,
}

impl MapBuilder {
    fn new(len: Option<usize>, variant: Option<&'static str>) -> Self {
        MapBuilder {
            map: Dict::with_capacity(len.unwrap_or(0).min(4096)),
            key: None,
            variant,
        }
    }
    fn field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), ConvertError> {
        self.map.insert(
            Value::Str(key.to_string()),
            value.serialize(ValueSerializer)?,
        );
        Ok(())
    }
    fn finish(self) -> R {
        let v = Value::Dict(self.map);
        Ok(match self.variant {
            Some(name) => variant(name, v),
            None => v,
        })
    }
}

impl ser::SerializeMap for MapBuilder {
    type Ok = Value;
    type Error = ConvertError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), ConvertError> {
        self.key = Some(key.serialize(ValueSerializer)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ConvertError> {
        let key = self
            .key
            .take()
            .ok_or_else(|| ConvertError("map value without a key".into()))?;
        self.map.insert(key, value.serialize(ValueSerializer)?);
        Ok(())
    }
    fn end(self) -> R {
        self.finish()
    }
}

struct_like!(MapBuilder => Value, ConvertError);
