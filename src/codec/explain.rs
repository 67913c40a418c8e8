//! Why a value did not encode.
//!
//! postcard turns every error a `Serialize` impl raises with
//! `serde::ser::Error::custom` into one unit variant
//! (`SerdeSerCustom`, "Serde Serialization Error"): the impl's message
//! is dropped. When that happens the value is serialised once more into
//! [`Why`], a serializer that writes nothing and keeps the message, so
//! that the user reads what could not be encoded and why. Only failures
//! pay for the second pass.

use serde::Serialize;
use serde::ser;

use super::ENCODING;
use super::serializer::{Message, seq_like, serializer, struct_like};

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

/// A serializer that writes nothing: it only walks the value to catch the
/// message of the first custom error ([`Message`]). Like postcard it is not human
/// readable, so values take the same serialisation path.
#[derive(Clone, Copy)]
struct Why;

impl Why {
    fn element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Message> {
        v.serialize(Why)
    }
    fn field<T: Serialize + ?Sized>(&mut self, _: &'static str, v: &T) -> Result<(), Message> {
        v.serialize(Why)
    }
    fn finish(self) -> Result<(), Message> {
        Ok(())
    }
}

serializer!(Why => Ok = (), Error = Message, Compound = Why;
    scalar _ => Ok(()),
    unit => Ok(()),
    wrapped v => v.serialize(Why),
    compound => Ok(Why),
);
seq_like!(Why => (), Message);
struct_like!(Why => (), Message);

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serializer;

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
