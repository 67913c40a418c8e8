//! The repeated parts of the crate's serde `Serializer`s, written once.
//!
//! A serde serializer implements 30 methods on itself and up to seven
//! helper traits for compound values, most of them alike. The crate has
//! five: the manager's `Value` builder, its byte probe, the encoder's
//! error explainer ([`explain`](super::explain)), the plain-run writer
//! ([`plain`](super::plain)) and the primitive catcher
//! ([`prim`](super::prim)). These macros write the alike parts from what
//! differs:
//!
//! - [`serializer!`]: a whole `Serializer` by the kind of value (a
//!   scalar, a unit-like value, a value wrapped in `Some` or a newtype,
//!   the start of a compound value), for serializers that treat each kind
//!   the same way; [`scalar_methods!`] for the scalars alone.
//! - [`refuse_methods!`]: the methods of the kinds a narrow serializer
//!   (one primitive, a plain value) refuses, each naming its kind.
//! - [`seq_like!`] and [`struct_like!`]: the compound traits, forwarded to
//!   the builder's own `element`, `field` and `finish` methods.
//! - [`Message`]: an error that keeps the text of a serde custom error;
//!   [`custom_error!`] makes such a type a serde error.
//! - [`transparent_structs!`]: a deserializer's newtype and unit structs,
//!   read as what they wrap.

/// A whole `impl Serializer for $t`, by kind of value, for serializers
/// that treat each kind alike: scalars (`bool`, integers, floats, `char`)
/// bound to `$v` give `$scalar`; `str`, bytes, `None`, unit, unit structs
/// and unit variants give `$unit`; the content of `Some` and of newtype
/// structs and variants, bound to `$inner`, gives `$wrapped`; the start of
/// a sequence, tuple, map, struct or one of their variants gives
/// `$compound`, of the type `$c`. Like postcard, not human readable.
macro_rules! serializer {
    (
        $t:ty => Ok = $ok:ty, Error = $err:ty, Compound = $c:ty;
        scalar $v:pat_param => $scalar:expr,
        unit => $unit:expr,
        wrapped $inner:pat_param => $wrapped:expr,
        compound => $compound:expr $(,)?
    ) => {
        impl serde::ser::Serializer for $t {
            type Ok = $ok;
            type Error = $err;
            type SerializeSeq = $c;
            type SerializeTuple = $c;
            type SerializeTupleStruct = $c;
            type SerializeTupleVariant = $c;
            type SerializeMap = $c;
            type SerializeStruct = $c;
            type SerializeStructVariant = $c;

            $crate::codec::serializer::scalar_methods!($v => $scalar;
                serialize_bool(bool), serialize_i8(i8), serialize_i16(i16), serialize_i32(i32),
                serialize_i64(i64), serialize_i128(i128), serialize_u8(u8), serialize_u16(u16),
                serialize_u32(u32), serialize_u64(u64), serialize_u128(u128), serialize_f32(f32),
                serialize_f64(f64), serialize_char(char));
            fn serialize_str(self, _: &str) -> Result<$ok, $err> { $unit }
            fn serialize_bytes(self, _: &[u8]) -> Result<$ok, $err> { $unit }
            fn serialize_none(self) -> Result<$ok, $err> { $unit }
            fn serialize_unit(self) -> Result<$ok, $err> { $unit }
            fn serialize_unit_struct(self, _: &'static str) -> Result<$ok, $err> { $unit }
            fn serialize_unit_variant(
                self, _: &'static str, _: u32, _: &'static str,
            ) -> Result<$ok, $err> { $unit }
            fn serialize_some<T: serde::Serialize + ?Sized>(
                self, $inner: &T,
            ) -> Result<$ok, $err> { $wrapped }
            fn serialize_newtype_struct<T: serde::Serialize + ?Sized>(
                self, _: &'static str, $inner: &T,
            ) -> Result<$ok, $err> { $wrapped }
            fn serialize_newtype_variant<T: serde::Serialize + ?Sized>(
                self, _: &'static str, _: u32, _: &'static str, $inner: &T,
            ) -> Result<$ok, $err> { $wrapped }
            fn serialize_seq(self, _: Option<usize>) -> Result<$c, $err> { $compound }
            fn serialize_tuple(self, _: usize) -> Result<$c, $err> { $compound }
            fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<$c, $err> {
                $compound
            }
            fn serialize_tuple_variant(
                self, _: &'static str, _: u32, _: &'static str, _: usize,
            ) -> Result<$c, $err> { $compound }
            fn serialize_map(self, _: Option<usize>) -> Result<$c, $err> { $compound }
            fn serialize_struct(self, _: &'static str, _: usize) -> Result<$c, $err> {
                $compound
            }
            fn serialize_struct_variant(
                self, _: &'static str, _: u32, _: &'static str, _: usize,
            ) -> Result<$c, $err> { $compound }
            fn is_human_readable(&self) -> bool {
                false
            }
        }
    };
}

/// `Serializer` methods for scalars that all give `$scalar`, the value
/// bound to `$v`: `scalar_methods!(v => Ok(Int(v.into())); serialize_i8(i8), …)`.
macro_rules! scalar_methods {
    ($v:pat_param => $scalar:expr; $($name:ident($t:ty)),* $(,)?) => {
        $(fn $name(self, $v: $t) -> Result<Self::Ok, Self::Error> { $scalar })*
    };
}

/// `Serializer` methods that refuse their kind of value: each gives
/// `$refuse(kind)`, `kind` a phrase such as `"a string"` or `"an enum"`
/// and `$refuse` a function `fn(&str) -> Result<_, Self::Error>`:
/// `refuse_methods!(not_plain; serialize_str, serialize_seq)`.
macro_rules! refuse_methods {
    ($refuse:expr; $($m:ident),* $(,)?) => {
        $($crate::codec::serializer::refuse_methods!(@one $m $refuse);)*
    };
    // Each method: its parameters after `self`, what it would give (an
    // associated type of the serializer) and the kind it names.
    (@one serialize_str $r:expr) => { $crate::codec::serializer::refuse_methods!(
        @fn serialize_str(&str) -> Ok, $r("a string")); };
    (@one serialize_bytes $r:expr) => { $crate::codec::serializer::refuse_methods!(
        @fn serialize_bytes(&[u8]) -> Ok, $r("a byte string")); };
    (@one serialize_none $r:expr) => { $crate::codec::serializer::refuse_methods!(
        @fn serialize_none() -> Ok, $r("an Option")); };
    (@one serialize_unit_variant $r:expr) => { $crate::codec::serializer::refuse_methods!(
        @fn serialize_unit_variant(&'static str, u32, &'static str) -> Ok, $r("an enum")); };
    (@one serialize_seq $r:expr) => { $crate::codec::serializer::refuse_methods!(
        @fn serialize_seq(Option<usize>) -> SerializeSeq, $r("a sequence")); };
    (@one serialize_tuple $r:expr) => { $crate::codec::serializer::refuse_methods!(
        @fn serialize_tuple(usize) -> SerializeTuple, $r("a tuple")); };
    (@one serialize_tuple_struct $r:expr) => { $crate::codec::serializer::refuse_methods!(
        @fn serialize_tuple_struct(&'static str, usize) -> SerializeTupleStruct,
        $r("a tuple struct")); };
    (@one serialize_tuple_variant $r:expr) => { $crate::codec::serializer::refuse_methods!(
        @fn serialize_tuple_variant(&'static str, u32, &'static str, usize)
        -> SerializeTupleVariant, $r("an enum")); };
    (@one serialize_map $r:expr) => { $crate::codec::serializer::refuse_methods!(
        @fn serialize_map(Option<usize>) -> SerializeMap, $r("a map")); };
    (@one serialize_struct $r:expr) => { $crate::codec::serializer::refuse_methods!(
        @fn serialize_struct(&'static str, usize) -> SerializeStruct, $r("a struct")); };
    (@one serialize_struct_variant $r:expr) => { $crate::codec::serializer::refuse_methods!(
        @fn serialize_struct_variant(&'static str, u32, &'static str, usize)
        -> SerializeStructVariant, $r("an enum")); };
    (@one serialize_some $r:expr) => {
        fn serialize_some<T: serde::Serialize + ?Sized>(self, _: &T)
        -> Result<Self::Ok, Self::Error> { $r("an Option") }
    };
    (@one serialize_newtype_variant $r:expr) => {
        fn serialize_newtype_variant<T: serde::Serialize + ?Sized>(
            self, _: &'static str, _: u32, _: &'static str, _: &T,
        ) -> Result<Self::Ok, Self::Error> { $r("an enum") }
    };
    (@fn $m:ident($($p:ty),*) -> $gives:ident, $body:expr) => {
        fn $m(self, $(_: $p),*) -> Result<Self::$gives, Self::Error> { $body }
    };
}

/// serde's four sequence traits (sequence, tuple, tuple struct, tuple
/// variant) for `$t`, ending in `$ok` or failing with `$err`, forwarded
/// to its methods `element(&mut self, &T)` and `finish(self)`.
macro_rules! seq_like {
    ($t:ty => $ok:ty, $err:ty) => {
        impl serde::ser::SerializeSeq for $t {
            $crate::codec::serializer::seq_like!(@body $ok, $err, serialize_element);
        }
        impl serde::ser::SerializeTuple for $t {
            $crate::codec::serializer::seq_like!(@body $ok, $err, serialize_element);
        }
        impl serde::ser::SerializeTupleStruct for $t {
            $crate::codec::serializer::seq_like!(@body $ok, $err, serialize_field);
        }
        impl serde::ser::SerializeTupleVariant for $t {
            $crate::codec::serializer::seq_like!(@body $ok, $err, serialize_field);
        }
    };
    (@body $ok:ty, $err:ty, $method:ident) => {
        type Ok = $ok;
        type Error = $err;
        fn $method<T: serde::Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Self::Error> {
            self.element(v)
        }
        fn end(self) -> Result<Self::Ok, Self::Error> {
            self.finish()
        }
    };
}

/// serde's two struct traits (struct, struct variant) for `$t`, ending in
/// `$ok` or failing with `$err`, forwarded
/// to its methods `field(&mut self, &'static str, &T)` and `finish(self)`.
macro_rules! struct_like {
    ($t:ty => $ok:ty, $err:ty) => {
        impl serde::ser::SerializeStruct for $t {
            $crate::codec::serializer::struct_like!(@body $ok, $err);
        }
        impl serde::ser::SerializeStructVariant for $t {
            $crate::codec::serializer::struct_like!(@body $ok, $err);
        }
    };
    (@body $ok:ty, $err:ty) => {
        type Ok = $ok;
        type Error = $err;
        fn serialize_field<T: serde::Serialize + ?Sized>(
            &mut self,
            key: &'static str,
            v: &T,
        ) -> Result<(), Self::Error> {
            self.field(key, v)
        }
        fn end(self) -> Result<Self::Ok, Self::Error> {
            self.finish()
        }
    };
}

/// An error that keeps the text of a serde custom error (`ser` or `de`),
/// or a message of the crate's own.
#[derive(Debug)]
pub(crate) struct Message(pub(crate) String);

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

/// serde's `ser::Error` and `de::Error` for `$t`, a tuple struct around
/// the message's `String`: `custom_error!(Message)`.
macro_rules! custom_error {
    ($t:ident) => {
        impl serde::ser::Error for $t {
            fn custom<T: std::fmt::Display>(msg: T) -> Self {
                $t(msg.to_string())
            }
        }
        impl serde::de::Error for $t {
            fn custom<T: std::fmt::Display>(msg: T) -> Self {
                $t(msg.to_string())
            }
        }
    };
}

/// A deserializer's `deserialize_unit_struct` (as its
/// `deserialize_unit`) and `deserialize_newtype_struct` (the content, in
/// place): a newtype or unit struct reads as what it wraps, as postcard
/// writes it.
macro_rules! transparent_structs {
    () => {
        fn deserialize_unit_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            v: V,
        ) -> Result<V::Value, Self::Error> {
            self.deserialize_unit(v)
        }
        fn deserialize_newtype_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            v: V,
        ) -> Result<V::Value, Self::Error> {
            v.visit_newtype_struct(self)
        }
    };
}

custom_error!(Message);

pub(crate) use {
    custom_error, refuse_methods, scalar_methods, seq_like, serializer, struct_like,
    transparent_structs,
};
