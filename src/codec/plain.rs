//! Runs of plain values: many values of one type whose every field is a
//! number or a `bool`, each written at a fixed width, so that a run of
//! them encodes and decodes at the speed of a copy (a pool chunk of
//! `u64`s: no varint per value).
//!
//! A value is plain when its `Serialize` impl writes only integers of at
//! most 64 bits, floats, `bool`s and `char`s, possibly inside newtypes,
//! tuples and structs: a fixed sequence of scalars. Each integer takes 8
//! bytes (little-endian; signed ones sign-extended), whatever its Rust
//! width, so that, as with postcard's varints, a value may be read back
//! at any integer width it fits ([`Plain`] checks the range). Floats keep
//! their width (as in postcard), `bool` is one byte, `char` four.
//!
//! A run: `[count: varint][width: varint][count × width bytes]`. A value
//! whose plain width is over 127 bytes, or over 32 bytes and more than
//! twice its postcard size plus 8 bytes (an array of small integers), is
//! left to postcard. Every
//! value of a run has the same width (so each one's bytes can be found
//! without decoding the others), and the width is never 0 (a run of
//! zero-sized values could claim any count). Values that are not plain
//! (strings, options, enums, sequences, 128-bit integers, a `Serialize`
//! impl that fails), or of varying width, make [`append_run`] refuse, and
//! the caller encodes them with postcard instead.

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, SeqAccess, Visitor};
use serde::{Serialize, ser};

use super::serializer::{refuse_methods, seq_like, struct_like, transparent_structs};
use super::{ENCODING, append_to, decode_value};

/// Why a value is not plain, or plain bytes do not decode (shared with
/// `prim`: a value that is not one primitive).
pub(crate) use super::serializer::Message as NotPlain;

fn not_plain<T>(what: &str) -> Result<T, NotPlain> {
    Err(NotPlain(format!("{what} is not a plain value")))
}

/// Appends `items` to `out` as a run of plain values, if every one is
/// plain and of the same width; otherwise `false`, with `out` (and the
/// descriptor table of the message being encoded) as they were.
pub(crate) fn append_run<T: Serialize>(items: &[T], out: &mut Vec<u8>) -> bool {
    let start = out.len();
    let fds_len = || ENCODING.with(|t| t.borrow().as_ref().map(Vec::len));
    let restore_fds = |len: Option<usize>| {
        if let Some(n) = len {
            ENCODING.with(|t| {
                if let Some(t) = t.borrow_mut().as_mut() {
                    t.truncate(n);
                }
            });
        }
    };
    let fds = fds_len();
    let ok = (|| {
        let (first, _) = items.split_first()?;
        append_to(&items.len(), out).ok()?;
        // The width, under 128, is a varint of one byte: written once the
        // first value is (no allocation: a chunk may be one value).
        let width_at = out.len();
        out.push(0);
        first.serialize(&mut Out(out)).ok()?;
        let width = out.len() - width_at - 1;
        if width == 0 || width > 127 {
            return None;
        }
        if width > 32 {
            // Widened integers must not make the run much larger than
            // postcard's varints would (an array of bytes: 8 times): at
            // most twice the first value's postcard size plus 8, measured
            // in place.
            let at = out.len();
            let before = fds_len();
            let compact = append_to(first, out).map(|()| out.len() - at);
            out.truncate(at);
            restore_fds(before);
            if width > 2 * compact.ok()? + 8 {
                return None;
            }
        }
        out[width_at] = width as u8;
        out.reserve(width.checked_mul(items.len() - 1)?);
        for item in &items[1..] {
            let at = out.len();
            item.serialize(&mut Out(out)).ok()?;
            if out.len() - at != width {
                return None;
            }
        }
        Some(())
    })()
    .is_some();
    if !ok {
        out.truncate(start);
        restore_fds(fds);
    }
    ok
}

/// A run's parts: its count, its width, its values' bytes
/// (`count × width`), and the bytes after it.
pub(crate) type RunParts<'a> = (usize, usize, &'a [u8], &'a [u8]);

/// The parts of the run at the front of `bytes`.
pub(crate) fn split_run(bytes: &[u8]) -> Result<RunParts<'_>, String> {
    let (count, rest) = decode_value::<usize>(bytes)?;
    let (width, rest) = decode_value::<usize>(rest)?;
    if width == 0 {
        return Err("a run of plain values of width 0".into());
    }
    let len = count
        .checked_mul(width)
        .filter(|&n| n <= rest.len())
        .ok_or_else(|| format!("a run of {count} values of {width} bytes is cut short"))?;
    let (values, rest) = rest.split_at(len);
    Ok((count, width, values, rest))
}

/// Decodes one plain value that fills `bytes` exactly.
#[inline]
pub(crate) fn decode_one<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut input = In(bytes);
    let v = T::deserialize(&mut input).map_err(|e| e.0)?;
    if input.0.is_empty() {
        Ok(v)
    } else {
        Err(format!(
            "{} bytes left over after a plain value",
            input.0.len()
        ))
    }
}

/// Decodes the run at the front of `bytes`, appending its values to
/// `out`; returns its count and the bytes after it. On an error, the
/// values decoded before it stay in `out`.
pub(crate) fn decode_run_into<'a, T: DeserializeOwned>(
    bytes: &'a [u8],
    out: &mut Vec<T>,
) -> Result<(usize, &'a [u8]), String> {
    let (count, width, values, rest) = split_run(bytes)?;
    out.reserve(count);
    for v in values.chunks_exact(width) {
        out.push(decode_one(v)?);
    }
    Ok((count, rest))
}

/// The plain serializer: appends each scalar's fixed-width bytes.
struct Out<'a>(&'a mut Vec<u8>);

impl Out<'_> {
    #[inline(always)]
    fn put<const N: usize>(&mut self, b: [u8; N]) -> Result<(), NotPlain> {
        self.0.extend_from_slice(&b);
        Ok(())
    }
    /// A tuple's or a struct's next field: its bytes follow the last.
    #[inline(always)]
    fn element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), NotPlain> {
        v.serialize(self)
    }
    #[inline(always)]
    fn field<T: Serialize + ?Sized>(&mut self, _: &'static str, v: &T) -> Result<(), NotPlain> {
        v.serialize(self)
    }
    #[inline(always)]
    fn finish(&mut self) -> Result<(), NotPlain> {
        Ok(())
    }
}

macro_rules! put_methods {
    ($($m:ident($t:ty) as $w:ty;)*) => {
        $(
            #[inline(always)]
            fn $m(self, v: $t) -> Result<(), NotPlain> {
                self.put((v as $w).to_le_bytes())
            }
        )*
    };
}

impl<'a> ser::Serializer for &mut Out<'a> {
    type Ok = ();
    type Error = NotPlain;
    type SerializeSeq = ser::Impossible<(), NotPlain>;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = ser::Impossible<(), NotPlain>;
    type SerializeMap = ser::Impossible<(), NotPlain>;
    type SerializeStruct = Self;
    type SerializeStructVariant = ser::Impossible<(), NotPlain>;

    put_methods! {
        serialize_u8(u8) as u64;
        serialize_u16(u16) as u64;
        serialize_u32(u32) as u64;
        serialize_u64(u64) as u64;
        serialize_i8(i8) as i64;
        serialize_i16(i16) as i64;
        serialize_i32(i32) as i64;
        serialize_i64(i64) as i64;
        serialize_f32(f32) as f32;
        serialize_f64(f64) as f64;
    }

    fn serialize_bool(self, v: bool) -> Result<(), NotPlain> {
        self.put([v as u8])
    }
    fn serialize_char(self, v: char) -> Result<(), NotPlain> {
        self.put((v as u32).to_le_bytes())
    }
    fn serialize_unit(self) -> Result<(), NotPlain> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), NotPlain> {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), NotPlain> {
        v.serialize(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, NotPlain> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, NotPlain> {
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, NotPlain> {
        Ok(self)
    }
    refuse_methods!(not_plain;
        serialize_str, serialize_bytes, serialize_none, serialize_some, serialize_unit_variant,
        serialize_newtype_variant, serialize_seq, serialize_tuple_variant, serialize_map,
        serialize_struct_variant);
    fn is_human_readable(&self) -> bool {
        false
    }
}

seq_like!(&mut Out<'_> => (), NotPlain);
struct_like!(&mut Out<'_> => (), NotPlain);

/// The plain deserializer over one value's bytes.
struct In<'de>(&'de [u8]);

impl<'de> In<'de> {
    #[inline(always)]
    fn take<const N: usize>(&mut self) -> Result<[u8; N], NotPlain> {
        match self.0.split_first_chunk::<N>() {
            Some((b, rest)) => {
                self.0 = rest;
                Ok(*b)
            }
            None => Err(NotPlain("a plain value is cut short".into())),
        }
    }
    #[inline(always)]
    fn unsigned(&mut self) -> Result<u64, NotPlain> {
        self.take::<8>().map(u64::from_le_bytes)
    }
    #[inline(always)]
    fn signed(&mut self) -> Result<i64, NotPlain> {
        self.take::<8>().map(i64::from_le_bytes)
    }
}

fn out_of_range<T>(v: impl fmt::Display, t: &str) -> Result<T, NotPlain> {
    Err(NotPlain(format!("{v} does not fit in {t}")))
}

macro_rules! int_methods {
    ($($m:ident, $visit:ident, $t:ty, $read:ident;)*) => {
        $(
            #[inline(always)]
            fn $m<V: Visitor<'de>>(self, v: V) -> Result<V::Value, NotPlain> {
                let x = self.$read()?;
                match <$t>::try_from(x) {
                    Ok(x) => v.$visit(x),
                    Err(_) => out_of_range(x, stringify!($t)),
                }
            }
        )*
    };
}

/// Element access for tuples and structs: `left` more values follow.
struct Fields<'a, 'de> {
    input: &'a mut In<'de>,
    left: usize,
}

impl<'de> SeqAccess<'de> for Fields<'_, 'de> {
    type Error = NotPlain;
    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, NotPlain> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.input).map(Some)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> de::Deserializer<'de> for &mut In<'de> {
    type Error = NotPlain;

    int_methods! {
        deserialize_u8, visit_u8, u8, unsigned;
        deserialize_u16, visit_u16, u16, unsigned;
        deserialize_u32, visit_u32, u32, unsigned;
        deserialize_u64, visit_u64, u64, unsigned;
        deserialize_i8, visit_i8, i8, signed;
        deserialize_i16, visit_i16, i16, signed;
        deserialize_i32, visit_i32, i32, signed;
        deserialize_i64, visit_i64, i64, signed;
    }

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, NotPlain> {
        not_plain("a self-describing value")
    }
    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, NotPlain> {
        match self.take::<1>()? {
            [0] => v.visit_bool(false),
            [1] => v.visit_bool(true),
            [b] => Err(NotPlain(format!("{b} is not a bool"))),
        }
    }
    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, NotPlain> {
        v.visit_f32(f32::from_le_bytes(self.take()?))
    }
    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, NotPlain> {
        v.visit_f64(f64::from_le_bytes(self.take()?))
    }
    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> Result<V::Value, NotPlain> {
        let c = u32::from_le_bytes(self.take()?);
        match char::from_u32(c) {
            Some(c) => v.visit_char(c),
            None => Err(NotPlain(format!("{c:#x} is not a char"))),
        }
    }
    fn deserialize_str<V: Visitor<'de>>(self, _: V) -> Result<V::Value, NotPlain> {
        not_plain("a string")
    }
    fn deserialize_string<V: Visitor<'de>>(self, _: V) -> Result<V::Value, NotPlain> {
        not_plain("a string")
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, _: V) -> Result<V::Value, NotPlain> {
        not_plain("a byte string")
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, _: V) -> Result<V::Value, NotPlain> {
        not_plain("a byte string")
    }
    fn deserialize_option<V: Visitor<'de>>(self, _: V) -> Result<V::Value, NotPlain> {
        not_plain("an Option")
    }
    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, NotPlain> {
        v.visit_unit()
    }
    transparent_structs!();
    fn deserialize_seq<V: Visitor<'de>>(self, _: V) -> Result<V::Value, NotPlain> {
        not_plain("a sequence")
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, NotPlain> {
        v.visit_seq(Fields {
            input: self,
            left: len,
        })
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        v: V,
    ) -> Result<V::Value, NotPlain> {
        self.deserialize_tuple(len, v)
    }
    fn deserialize_map<V: Visitor<'de>>(self, _: V) -> Result<V::Value, NotPlain> {
        not_plain("a map")
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, NotPlain> {
        self.deserialize_tuple(fields.len(), v)
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, NotPlain> {
        not_plain("an enum")
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, _: V) -> Result<V::Value, NotPlain> {
        not_plain("an identifier")
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, NotPlain> {
        not_plain("an ignored value")
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn run<T: Serialize>(items: &[T]) -> Option<Vec<u8>> {
        let mut out = vec![9];
        let ok = append_run(items, &mut out);
        assert!(
            ok || out == [9],
            "a refused run leaves the buffer as it was"
        );
        ok.then(|| out[1..].to_vec())
    }

    fn back<T: DeserializeOwned>(bytes: &[u8]) -> Result<Vec<T>, String> {
        let mut out = Vec::new();
        let (n, rest) = decode_run_into(bytes, &mut out)?;
        assert!(rest.is_empty());
        assert_eq!(n, out.len());
        Ok(out)
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug, Clone, Copy)]
    struct Point {
        x: f64,
        y: i16,
        on: bool,
    }

    #[test]
    fn scalars_tuples_and_structs_round_trip_at_fixed_widths() {
        let v: Vec<u64> = (0..100).map(|i| i * 1_000_000_007).collect();
        let bytes = run(&v).unwrap();
        assert_eq!(bytes.len(), 2 + 8 * 100);
        assert_eq!(back::<u64>(&bytes).unwrap(), v);
        let t = vec![(1i32, -2i8, 'é'), (-7, 3, 'z')];
        assert_eq!(back::<(i32, i8, char)>(&run(&t).unwrap()).unwrap(), t);
        let p = vec![
            Point {
                x: 1.5,
                y: -3,
                on: true
            };
            3
        ];
        assert_eq!(back::<Point>(&run(&p).unwrap()).unwrap(), p);
        let f = vec![1.25f32, -0.0];
        assert_eq!(back::<f32>(&run(&f).unwrap()).unwrap(), f);
    }

    #[test]
    fn integers_are_read_at_any_width_they_fit() {
        let bytes = run(&[5u8, 200]).unwrap();
        assert_eq!(back::<u64>(&bytes).unwrap(), vec![5, 200]);
        assert_eq!(back::<u16>(&bytes).unwrap(), vec![5, 200]);
        assert!(back::<i8>(&bytes).unwrap_err().contains("does not fit"));
        let neg = run(&[-1i64, 7]).unwrap();
        assert_eq!(back::<i16>(&neg).unwrap(), vec![-1, 7]);
    }

    #[test]
    fn values_that_are_not_plain_are_refused() {
        assert!(run(&["a".to_string()]).is_none());
        assert!(run(&[Some(1u8)]).is_none());
        assert!(run(&[vec![1u8]]).is_none());
        // Plain, but 8 times postcard's size.
        assert!(run(&[[7u8; 32]]).is_none());
        assert!(run(&[1u128]).is_none());
        assert!(run(&[(), ()]).is_none(), "width 0");
        assert!(run::<u64>(&[]).is_none());
        #[derive(Serialize)]
        enum E {
            A,
        }
        assert!(run(&[E::A]).is_none());
    }

    /// A handle, then a string if the flag is set (not plain then).
    struct Handle(super::super::SharedFd, bool);

    impl Serialize for Handle {
        fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use ser::SerializeTuple;
            let mut t = s.serialize_tuple(2)?;
            t.serialize_element(&self.0)?;
            if self.1 {
                t.serialize_element("text")?;
            }
            t.end()
        }
    }

    #[test]
    fn a_refused_run_leaves_the_descriptor_table_as_it_was() {
        let fd = || super::super::SharedFd::new(std::fs::File::open("/dev/null").unwrap().into());
        let items = [Handle(fd(), false), Handle(fd(), true)];
        let enc = super::super::encode_with(Vec::new(), 0, |out| {
            assert!(!append_run(&items, out), "the second value is not plain");
            append_to(&items[..], out).map_err(crate::error::CodecError::Encode)
        })
        .unwrap();
        assert_eq!(enc.fds.len(), 2, "each handle once, from the postcard pass");
    }

    #[test]
    fn garbage_runs_are_errors() {
        let bytes = run(&[1u64, 2, 3]).unwrap();
        for cut in 0..bytes.len() {
            assert!(back::<u64>(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // A huge count with few bytes: refused before any allocation.
        let mut huge = Vec::new();
        append_to(&(usize::MAX / 4), &mut huge).unwrap();
        append_to(&8usize, &mut huge).unwrap();
        assert!(back::<u64>(&huge).is_err());
        // Width 0 is never written.
        assert!(back::<()>(&[5, 0]).is_err());
        // A bool byte that is not 0 or 1; a char that is not one.
        assert!(back::<bool>(&[1, 1, 2]).is_err());
        assert!(back::<char>(&[1, 4, 0, 0xd8, 0, 0]).is_err());
        // Bytes left over inside a value of the wrong width.
        assert!(back::<u32>(&[1, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
