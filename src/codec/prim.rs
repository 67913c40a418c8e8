//! A message that is one primitive value (an integer, a float, a `bool`,
//! a `char`, `()`, or a newtype around one of them), carried on the
//! direct hand-over path (`csp/chan/fast.rs`) as the value itself: the writer's
//! `Serialize` hands the primitive to [`capture`], the reader's
//! `Deserialize` takes it from [`decode`], with no bytes in between.
//!
//! The hand-over's messages never leave the OS process (a promotion makes
//! every parked party do its operation again on the general path, which
//! encodes afresh), so their form is private to this module and
//! `fast.rs`. Anything else a value serializes into (a string, a
//! sequence, a struct of two fields, an enum, an `Option`) makes
//! [`capture`] give up, and the value travels as the crate's codec bytes.

use serde::de::{self, DeserializeOwned, Visitor};
use serde::ser::{self, Impossible, Serialize};

use super::plain::NotPlain as NotPrim;
use super::serializer::{refuse_methods, scalar_methods, transparent_structs};
use crate::error::CodecError;

/// One primitive value, or nothing (`Empty`: the message is in bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) enum Prim {
    #[default]
    Empty,
    Unit,
    Bool(bool),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Char(char),
}

/// Bytes the crate's codec needs at most for any [`Prim`] (a 64-bit
/// varint): a channel whose messages may be this long takes every
/// captured value that the general path would take.
pub(crate) const MAX_ENCODED: usize = 10;

/// The primitive `value` serializes into, if it is one.
pub(crate) fn capture<T: Serialize + ?Sized>(value: &T) -> Option<Prim> {
    value.serialize(Capture).ok()
}

/// The value of type `T` that `p` holds (`p` not `Empty`).
pub(crate) fn decode<T: DeserializeOwned>(p: Prim) -> Result<T, CodecError> {
    T::deserialize(Take(p)).map_err(|e| CodecError::Decode(e.0))
}

/// Refuses a value that is not one primitive (the reason is not kept:
/// the caller only falls back to bytes).
fn not_prim<T>(_: &str) -> Result<T, NotPrim> {
    Err(NotPrim(String::new()))
}

/// The serializer that takes one primitive and refuses everything else.
struct Capture;

type No = Impossible<Prim, NotPrim>;

impl ser::Serializer for Capture {
    type Ok = Prim;
    type Error = NotPrim;
    type SerializeSeq = No;
    type SerializeTuple = No;
    type SerializeTupleStruct = No;
    type SerializeTupleVariant = No;
    type SerializeMap = No;
    type SerializeStruct = No;
    type SerializeStructVariant = No;

    scalar_methods!(v => Ok(Prim::I64(v.into()));
        serialize_i8(i8), serialize_i16(i16), serialize_i32(i32));
    scalar_methods!(v => Ok(Prim::U64(v.into()));
        serialize_u8(u8), serialize_u16(u16), serialize_u32(u32));
    scalar_methods!(v => Ok(Prim::I64(v)); serialize_i64(i64));
    scalar_methods!(v => Ok(Prim::U64(v)); serialize_u64(u64));
    scalar_methods!(v => Ok(Prim::Bool(v)); serialize_bool(bool));
    scalar_methods!(v => Ok(Prim::F32(v)); serialize_f32(f32));
    scalar_methods!(v => Ok(Prim::F64(v)); serialize_f64(f64));
    scalar_methods!(v => Ok(Prim::Char(v)); serialize_char(char));
    fn serialize_unit(self) -> Result<Prim, NotPrim> {
        Ok(Prim::Unit)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<Prim, NotPrim> {
        Ok(Prim::Unit)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Prim, NotPrim> {
        value.serialize(self)
    }
    refuse_methods!(not_prim;
        serialize_str, serialize_bytes, serialize_none, serialize_some, serialize_unit_variant,
        serialize_newtype_variant, serialize_seq, serialize_tuple, serialize_tuple_struct,
        serialize_tuple_variant, serialize_map, serialize_struct, serialize_struct_variant);
}

/// The deserializer that gives one captured primitive back, through the
/// visitor method the type asks for (so that a visitor implementing only
/// that one accepts it), converting within range.
struct Take(Prim);

impl Take {
    fn mismatch(&self, wanted: &str) -> NotPrim {
        NotPrim(format!("expected {wanted}, the message holds {:?}", self.0))
    }
}

/// `deserialize_uN` / `deserialize_iN`: the stored integer, converted.
macro_rules! int {
    ($($method:ident $visit:ident $t:ty),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NotPrim> {
            let v = match self.0 {
                Prim::U64(v) => <$t>::try_from(v).ok(),
                Prim::I64(v) => <$t>::try_from(v).ok(),
                _ => None,
            };
            match v {
                Some(v) => visitor.$visit(v),
                None => Err(self.mismatch(stringify!($t))),
            }
        }
    )*};
}

/// `deserialize_bool` / `_f32` / `_f64` / `_char`: the stored value if it
/// is of that kind.
macro_rules! exact {
    ($($method:ident $visit:ident $kind:ident $name:literal),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NotPrim> {
            match self.0 {
                Prim::$kind(v) => visitor.$visit(v),
                _ => Err(self.mismatch($name)),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Take {
    type Error = NotPrim;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NotPrim> {
        match self.0 {
            Prim::Empty => Err(self.mismatch("a value")),
            Prim::Unit => visitor.visit_unit(),
            Prim::Bool(v) => visitor.visit_bool(v),
            Prim::U64(v) => visitor.visit_u64(v),
            Prim::I64(v) => visitor.visit_i64(v),
            Prim::F32(v) => visitor.visit_f32(v),
            Prim::F64(v) => visitor.visit_f64(v),
            Prim::Char(v) => visitor.visit_char(v),
        }
    }

    int!(
        deserialize_u8 visit_u8 u8,
        deserialize_u16 visit_u16 u16,
        deserialize_u32 visit_u32 u32,
        deserialize_u64 visit_u64 u64,
        deserialize_i8 visit_i8 i8,
        deserialize_i16 visit_i16 i16,
        deserialize_i32 visit_i32 i32,
        deserialize_i64 visit_i64 i64
    );

    exact!(
        deserialize_bool visit_bool Bool "bool",
        deserialize_f32 visit_f32 F32 "f32",
        deserialize_f64 visit_f64 F64 "f64",
        deserialize_char visit_char Char "char"
    );

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NotPrim> {
        match self.0 {
            Prim::Unit => visitor.visit_unit(),
            _ => Err(self.mismatch("()")),
        }
    }

    transparent_structs!();

    serde::forward_to_deserialize_any! {
        i128 u128 str string bytes byte_buf option seq tuple tuple_struct map
        struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Meters(f64);

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Marker;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Pair(u8, u8);

    fn round<T: Serialize + DeserializeOwned>(v: &T) -> T {
        decode(capture(v).expect("a primitive")).expect("decodes")
    }

    #[test]
    fn primitives_round_trip() {
        assert_eq!(round(&u64::MAX), u64::MAX);
        assert_eq!(round(&-5i8), -5i8);
        assert_eq!(round(&i64::MIN), i64::MIN);
        assert_eq!(round(&7u16), 7u16);
        assert!(round(&true));
        assert!(!round(&false));
        assert_eq!(round(&'é'), 'é');
        assert_eq!(round(&1.5f32), 1.5f32);
        assert_eq!(round(&Meters(2.5)), Meters(2.5));
        assert_eq!(round(&Marker), Marker);
        round(&());
    }

    #[test]
    fn compound_values_are_not_captured() {
        assert_eq!(capture(&Pair(1, 2)), None);
        assert_eq!(capture(&Some(1u8)), None);
        assert_eq!(capture(&"text"), None);
        assert_eq!(capture(&vec![1u8]), None);
        assert_eq!(capture(&(1u8, 2u8)), None);
    }

    #[test]
    fn a_mismatched_type_is_a_decode_error() {
        let p = capture(&300u64).expect("a primitive");
        assert!(matches!(decode::<u8>(p), Err(CodecError::Decode(_))));
        assert!(decode::<bool>(p).is_err());
        assert!(decode::<String>(p).is_err());
        assert_eq!(decode::<i32>(p).expect("in range"), 300);
    }
}
