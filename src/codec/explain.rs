//! Why a value did not encode.
//!
//! postcard turns every error a `Serialize` impl raises with
//! `serde::ser::Error::custom` into one unit variant
//! (`SerdeSerCustom`, "Serde Serialization Error"): the impl's message
//! is dropped. When that happens the value is serialised once more into
//! [`Why`], a serializer that writes nothing and keeps the message, so
//! that the user reads what could not be encoded and why. Only failures
//! pay for the second pass.

use std::fmt;

use serde::Serialize;
use serde::ser::{self, Serializer};

use super::ENCODING;

/// The text for postcard's error `e` from encoding `value`. Call it in
/// the same context as the failed encoding (inside or outside
/// [`encode`](super::encode)), so that handle types fail the same way.
pub(crate) fn encode_error<T: Serialize + ?Sized>(value: &T, e: postcard::Error) -> String {
    if e != postcard::Error::SerdeSerCustom {
        return e.to_string();
    }
    // Handles push their descriptors while encoding: give them a scratch
    // table if there is one now, so the real one is left as it was.
    let scratch = ENCODING.with(|t| {
        let mut t = t.borrow_mut();
        let had = t.is_some();
        std::mem::replace(&mut *t, had.then(Vec::new))
    });
    let message = value.serialize(Why);
    ENCODING.with(|t| *t.borrow_mut() = scratch);
    match message {
        Err(Message(m)) => m,
        Ok(()) => "a Serialize implementation failed (postcard does not keep its message, and \
                   it succeeded when tried again)"
            .to_string(),
    }
}

/// The message of the first custom error.
#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

impl ser::Error for Message {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Message(msg.to_string())
    }
}

/// A serializer that writes nothing: it only walks the value to catch the
/// message of the first custom error. Like postcard it is not human
/// readable, so values take the same serialisation path.
#[derive(Clone, Copy)]
struct Why;

macro_rules! nothing {
    ($($name:ident($($t:ty),*)),* $(,)?) => {
        $(
            fn $name(self $(, _: $t)*) -> Result<(), Message> {
                Ok(())
            }
        )*
    };
}

impl Serializer for Why {
    type Ok = ();
    type Error = Message;
    type SerializeSeq = Why;
    type SerializeTuple = Why;
    type SerializeTupleStruct = Why;
    type SerializeTupleVariant = Why;
    type SerializeMap = Why;
    type SerializeStruct = Why;
    type SerializeStructVariant = Why;

    nothing!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Message> {
        value.serialize(Why)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Message> {
        value.serialize(Why)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Message> {
        value.serialize(Why)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Why, Message> {
        Ok(Why)
    }

    fn serialize_tuple(self, _: usize) -> Result<Why, Message> {
        Ok(Why)
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Why, Message> {
        Ok(Why)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Why, Message> {
        Ok(Why)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Why, Message> {
        Ok(Why)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Why, Message> {
        Ok(Why)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Why, Message> {
        Ok(Why)
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

impl ser::SerializeSeq for Why {
    type Ok = ();
    type Error = Message;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Message> {
        v.serialize(Why)
    }
    fn end(self) -> Result<(), Message> {
        Ok(())
    }
}

impl ser::SerializeTuple for Why {
    type Ok = ();
    type Error = Message;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Message> {
        v.serialize(Why)
    }
    fn end(self) -> Result<(), Message> {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for Why {
    type Ok = ();
    type Error = Message;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Message> {
        v.serialize(Why)
    }
    fn end(self) -> Result<(), Message> {
        Ok(())
    }
}

impl ser::SerializeTupleVariant for Why {
    type Ok = ();
    type Error = Message;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Message> {
        v.serialize(Why)
    }
    fn end(self) -> Result<(), Message> {
        Ok(())
    }
}

impl ser::SerializeMap for Why {
    type Ok = ();
    type Error = Message;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), Message> {
        k.serialize(Why)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Message> {
        v.serialize(Why)
    }
    fn end(self) -> Result<(), Message> {
        Ok(())
    }
}

impl ser::SerializeStruct for Why {
    type Ok = ();
    type Error = Message;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Message> {
        v.serialize(Why)
    }
    fn end(self) -> Result<(), Message> {
        Ok(())
    }
}

impl ser::SerializeStructVariant for Why {
    type Ok = ();
    type Error = Message;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Message> {
        v.serialize(Why)
    }
    fn end(self) -> Result<(), Message> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Refuses;

    impl Serialize for Refuses {
        fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(ser::Error::custom("refuses: not today"))
        }
    }

    #[test]
    fn the_custom_message_is_kept_deep_inside_a_value() {
        let value = (1u8, vec![Some(("x", Refuses))]);
        let e = postcard::to_allocvec(&value).unwrap_err();
        assert_eq!(e, postcard::Error::SerdeSerCustom);
        assert_eq!(encode_error(&value, e), "refuses: not today");
    }

    #[test]
    fn other_postcard_errors_keep_their_text() {
        let e = postcard::Error::SerializeBufferFull;
        assert_eq!(encode_error(&1u8, e.clone()), e.to_string());
    }
}
