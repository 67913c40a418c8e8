//! [`Value`] → `T: Deserialize`: a `Value` is itself a serde `Deserializer`.

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;

use super::{ConvertError, Value};
use crate::codec::serializer::transparent_structs;

type R<T> = Result<T, ConvertError>;

impl<'de> IntoDeserializer<'de, ConvertError> for Value {
    type Deserializer = Value;
    fn into_deserializer(self) -> Value {
        self
    }
}

fn visit_int<'de, V: Visitor<'de>>(i: i128, visitor: V) -> R<V::Value> {
    if let Ok(x) = i64::try_from(i) {
        visitor.visit_i64(x)
    } else if let Ok(x) = u64::try_from(i) {
        visitor.visit_u64(x)
    } else {
        visitor.visit_i128(i)
    }
}

impl<'de> de::Deserializer<'de> for Value {
    type Error = ConvertError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        match self {
            Value::None => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Int(i) => visit_int(i, visitor),
            Value::Float(f) => visitor.visit_f64(f),
            Value::Str(s) => visitor.visit_string(s),
            // A sequence of `u8`s: what a `Vec<u8>` (stored as bytes, see
            // `ser`) asks for, also through serde's buffering of tagged
            // enums and flattened fields. Types asking for bytes get them
            // whole in `deserialize_bytes`.
            Value::Bytes(b) => {
                let mut seq = SeqDeserializer::new(b.into_iter());
                let out = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(out)
            }
            Value::List(v) | Value::Tuple(v) => {
                let mut seq = SeqDeserializer::new(v.into_iter());
                let out = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(out)
            }
            Value::Dict(d) => {
                let mut map = MapDeserializer::new(d.into_iter());
                let out = visitor.visit_map(&mut map)?;
                map.end()?;
                Ok(out)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        match self {
            Value::None => visitor.visit_none(),
            v => visitor.visit_some(v),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        match self {
            Value::Int(i) => visitor.visit_f64(i as f64),
            v => v.deserialize_any(visitor),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        match self {
            Value::List(v) => {
                let bytes: R<Vec<u8>> =
                    v.into_iter()
                        .map(|x| match x {
                            Value::Int(i) => u8::try_from(i)
                                .map_err(|_| ConvertError(format!("{i} is not a byte"))),
                            other => Err(ConvertError(format!(
                                "expected bytes, found a list holding {}",
                                other.type_name()
                            ))),
                        })
                        .collect();
                visitor.visit_byte_buf(bytes?)
            }
            Value::Str(s) => visitor.visit_byte_buf(s.into_bytes()),
            Value::Bytes(b) => visitor.visit_byte_buf(b),
            v => v.deserialize_any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        match self {
            // A string type takes UTF-8 bytes (and checks them).
            Value::Bytes(b) => visitor.visit_byte_buf(b),
            v => v.deserialize_any(visitor),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.deserialize_string(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        match self {
            Value::Tuple(v) if v.is_empty() => visitor.visit_unit(),
            v => v.deserialize_any(visitor),
        }
    }

    transparent_structs!();

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> R<V::Value> {
        match self {
            Value::Str(s) => visitor.visit_enum(EnumAccess {
                variant: Value::Str(s),
                content: None,
            }),
            Value::Dict(d) if d.len() == 1 => {
                let (k, v) = d.into_iter().next().expect("one entry");
                visitor.visit_enum(EnumAccess {
                    variant: k,
                    content: Some(v),
                })
            }
            other => Err(ConvertError(format!(
                "expected an enum (a variant name or a one-entry dict), found {}",
                other.type_name()
            ))),
        }
    }

    fn is_human_readable(&self) -> bool {
        false
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 char
        seq tuple tuple_struct map struct identifier ignored_any
    }
}

struct EnumAccess {
    variant: Value,
    content: Option<Value>,
}

impl<'de> de::EnumAccess<'de> for EnumAccess {
    type Error = ConvertError;
    type Variant = VariantAccess;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> R<(S::Value, VariantAccess)> {
        let v = seed.deserialize(self.variant)?;
        Ok((
            v,
            VariantAccess {
                content: self.content,
            },
        ))
    }
}

struct VariantAccess {
    content: Option<Value>,
}

impl VariantAccess {
    fn content(self) -> R<Value> {
        self.content
            .ok_or_else(|| ConvertError("enum variant has no content".into()))
    }
}

impl<'de> de::VariantAccess<'de> for VariantAccess {
    type Error = ConvertError;

    fn unit_variant(self) -> R<()> {
        match self.content {
            None | Some(Value::None) => Ok(()),
            Some(other) => Err(ConvertError(format!(
                "unit variant holds a {}",
                other.type_name()
            ))),
        }
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> R<S::Value> {
        seed.deserialize(self.content()?)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> R<V::Value> {
        de::Deserializer::deserialize_any(self.content()?, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> R<V::Value> {
        de::Deserializer::deserialize_any(self.content()?, visitor)
    }
}
