//! [`ShareableList`]: Python's `multiprocessing.shared_memory.ShareableList`,
//! byte for byte: a fixed-length list of integers, floats, booleans,
//! strings, byte strings and `None`s in one named [`SharedMemory`]
//! segment, which Python (3.11 and later; 3.8–3.10 used an older layout)
//! opens by name with `ShareableList(name=...)`, and the other way round.
//!
//! # Layout (CPython's, native byte order)
//!
//! | bytes | what |
//! |---|---|
//! | 8 | the item count `n` (`q`) |
//! | `(n + 1) × 8` | where each item's slot starts in the data area, and where the area ends (`q` each) |
//! | slots | the items: 8 bytes for an int (`q`), float (`d`), bool (`xxxxxxx?`) or `None` (`xxxxxx?x`); a string or byte string gets its length rounded up to the next multiple of 8 (at least one byte more) |
//! | `n × 8` | each item's `struct` format, NUL-padded (`q`, `d`, `xxxxxxx?`, `xxxxxx?x`, `<N>s`) |
//! | `n` | each item's kind: 0 number or bool, 1 str, 2 bytes, 3 `None` |
//!
//! The slots never move: an item may change type, but a string or byte
//! string must fit its slot (Python's rule). Strings are UTF-8; trailing
//! NUL bytes of a string or byte string are dropped on reading, as Python
//! does. (Python sizes a new string slot by its length in characters; this
//! crate by its length in UTF-8 bytes, so a non-ASCII string is never
//! truncated. Either way the slot sizes are in the segment, so both sides
//! read each other's lists.)
//!
//! # Concurrency
//!
//! Like Python's, the list has no lock: a reader racing with a writer of
//! the same item may see a mix of old and new. Every read is checked, so
//! such a mix (or any damaged segment) is an error value, never a crash.
//! Guard items that several processes write with a [`Lock`](crate::Lock).
//!
//! | dies here | left behind | repaired by |
//! |---|---|---|
//! | creating the list, before the one copy of the whole image | a segment of zeros (count 0) or a partial image | the creator's segment is stale and removed by the next `create` (see [`SharedMemory`]) |
//! | in `set`, between the format, the kind and the value | one item mixing old and new: a value of the new type made of old bytes, or a read error ([`ShareableListError::Corrupt`] / [`ShareableListError::Utf8`]) | the next `set` of that item; no other item is touched |
//!
//! The header (count and slot offsets) is written once, at creation, and
//! read once per handle, when opening; reads and writes after that check
//! every format, kind and length against the slots read then.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{IndexError, ShareableListError, ShmError};
use super::shared_memory::SharedMemory;
use crate::macros::from_variants;

/// Slots are multiples of this.
const ALIGN: usize = 8;
/// Kind codes (CPython's back-transform codes).
const CODE_VALUE: u8 = 0;
const CODE_STR: u8 = 1;
const CODE_BYTES: u8 = 2;
const CODE_NONE: u8 = 3;
const FMT_INT: &[u8] = b"q";
const FMT_FLOAT: &[u8] = b"d";
const FMT_BOOL: &[u8] = b"xxxxxxx?";
const FMT_NONE: &[u8] = b"xxxxxx?x";
/// A string slot's format `<N>s` must fit in 8 bytes.
const MAX_SLOT: usize = 9_999_999;

/// One item of a [`ShareableList`]: the types Python's `ShareableList`
/// stores.
///
/// Equality is the enum's own: `Int(1)` is not `Float(1.0)` (Python's
/// `count` and `index` would say they are equal).
#[derive(Debug, Clone, PartialEq)]
pub enum ShareableItem {
    /// Python `int` (a 64-bit signed integer).
    Int(i64),
    /// Python `float`.
    Float(f64),
    /// Python `bool`.
    Bool(bool),
    /// Python `str` (stored as UTF-8).
    Str(String),
    /// Python `bytes`.
    Bytes(Vec<u8>),
    /// Python `None`.
    None,
}

impl ShareableItem {
    /// The bytes of a string or byte string item.
    fn payload(&self) -> Option<&[u8]> {
        match self {
            ShareableItem::Str(s) => Some(s.as_bytes()),
            ShareableItem::Bytes(b) => Some(b),
            _ => None,
        }
    }
}

from_variants!(ShareableItem {
    i64 => Int,
    f64 => Float,
    bool => Bool,
    String => Str,
    Vec<u8> => Bytes,
});

impl From<&str> for ShareableItem {
    fn from(v: &str) -> Self {
        ShareableItem::Str(v.to_string())
    }
}
impl From<&[u8]> for ShareableItem {
    fn from(v: &[u8]) -> Self {
        ShareableItem::Bytes(v.to_vec())
    }
}
impl From<()> for ShareableItem {
    fn from(_: ()) -> Self {
        ShareableItem::None
    }
}

/// Prints the item as Python's `repr` does: `1`, `2.5`, `True`, `'a'`,
/// `b'a'`, `None`.
impl fmt::Display for ShareableItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::manager::AnyValue as Value;
        let v = match self {
            ShareableItem::Int(i) => Value::Int((*i).into()),
            ShareableItem::Float(x) => Value::Float(*x),
            ShareableItem::Bool(b) => Value::Bool(*b),
            ShareableItem::Str(s) => Value::Str(s.clone()),
            ShareableItem::Bytes(b) => Value::Bytes(b.clone()),
            ShareableItem::None => Value::None,
        };
        f.write_str(&v.repr())
    }
}

/// The slot size and format of a new item.
fn slot_for(index: usize, item: &ShareableItem) -> Result<(usize, Vec<u8>), ShareableListError> {
    Ok(match item.payload() {
        Some(p) => {
            let slot = ALIGN * (p.len() / ALIGN + 1);
            if slot > MAX_SLOT {
                return Err(ShareableListError::ItemTooLarge {
                    index,
                    len: p.len(),
                });
            }
            (slot, format!("{slot}s").into_bytes())
        }
        None => (ALIGN, fixed_format(item).to_vec()),
    })
}

fn fixed_format(item: &ShareableItem) -> &'static [u8] {
    match item {
        ShareableItem::Int(_) => FMT_INT,
        ShareableItem::Float(_) => FMT_FLOAT,
        ShareableItem::Bool(_) => FMT_BOOL,
        _ => FMT_NONE,
    }
}

fn code_of(item: &ShareableItem) -> u8 {
    match item {
        ShareableItem::Str(_) => CODE_STR,
        ShareableItem::Bytes(_) => CODE_BYTES,
        ShareableItem::None => CODE_NONE,
        _ => CODE_VALUE,
    }
}

/// The 8 bytes a fixed-size item packs to (`struct.pack` of its format).
fn fixed_bytes(item: &ShareableItem) -> [u8; 8] {
    match item {
        ShareableItem::Int(i) => i.to_ne_bytes(),
        ShareableItem::Float(x) => x.to_ne_bytes(),
        ShareableItem::Bool(b) => {
            let mut out = [0u8; 8];
            out[7] = u8::from(*b);
            out
        }
        _ => [0u8; 8],
    }
}

/// The bytes needed for `items`, and each one's slot size and format.
type Plan = (usize, Vec<(usize, Vec<u8>)>);

fn plan(items: &[ShareableItem]) -> Result<Plan, ShareableListError> {
    let slots: Vec<(usize, Vec<u8>)> = items
        .iter()
        .enumerate()
        .map(|(i, item)| slot_for(i, item))
        .collect::<Result<_, _>>()?;
    let n = items.len();
    let data: usize = slots.iter().map(|s| s.0).sum();
    let size = 8 + 8 * (n + 1) + data + 8 * n + n;
    Ok((size, slots))
}

/// A fixed-length list of [`ShareableItem`]s in a named shared memory
/// segment, laid out exactly as Python's
/// `multiprocessing.shared_memory.ShareableList` (see the module docs).
///
/// The segment follows [`SharedMemory`]'s lifetime rule: made by
/// [`new`](Self::new) or [`create`](Self::create), it is removed when the
/// creating process drops its last handle; [`open`](Self::open)ed, it
/// never is by this handle.
///
/// ```
/// use multiproc::{ShareableItem, ShareableList};
///
/// let list = ShareableList::new(vec![
///     ShareableItem::Int(1),
///     "howdy".into(),
///     ShareableItem::None,
/// ])?;
/// // Python: ShareableList(name=list.name()) sees [1, 'howdy', None].
/// let other = ShareableList::open(list.name())?;
/// other.set(0, 2.5.into())?;
/// assert_eq!(list.get(0)?, ShareableItem::Float(2.5));
/// // A string must fit its slot: "howdy" got 8 bytes.
/// assert!(list.set(1, "a longer string".into()).is_err());
/// assert_eq!(list.to_string(), "ShareableList([2.5, 'howdy', None])");
/// # Ok::<(), multiproc::ShareableListError>(())
/// ```
#[derive(Clone)]
pub struct ShareableList {
    shm: SharedMemory,
    len: usize,
    /// Slot starts relative to the data area, and the area's end (`len + 1`
    /// entries), checked at opening; they never change.
    offsets: Vec<usize>,
}

impl ShareableList {
    /// A new list holding `items`, in a segment with a fresh unique name
    /// (Python's `ShareableList(sequence)`).
    pub fn new(items: Vec<ShareableItem>) -> Result<ShareableList, ShareableListError> {
        let (size, _) = plan(&items)?;
        Self::build(SharedMemory::new(size)?, &items)
    }

    /// A new list holding `items` in the segment `name` (Python's
    /// `ShareableList(sequence, name=name)`); fails with
    /// [`ShmError::Exists`] if a live segment has that name.
    pub fn create(
        name: &str,
        items: Vec<ShareableItem>,
    ) -> Result<ShareableList, ShareableListError> {
        let (size, _) = plan(&items)?;
        Self::build(SharedMemory::create(name, size)?, &items)
    }

    /// The bytes a segment needs to hold `items`.
    pub(crate) fn size_for(items: &[ShareableItem]) -> Result<usize, ShareableListError> {
        Ok(plan(items)?.0)
    }

    /// Writes `items` into the fresh segment `shm`, which has at least
    /// [`size_for`](Self::size_for) bytes.
    pub(crate) fn build(
        shm: SharedMemory,
        items: &[ShareableItem],
    ) -> Result<ShareableList, ShareableListError> {
        let (size, slots) = plan(items)?;
        if shm.size() < size {
            return Err(ShmError::OutOfBounds(IndexError {
                index: size,
                len: shm.size(),
            })
            .into());
        }
        let n = items.len();
        let mut offsets = Vec::with_capacity(n + 1);
        let mut at = 0usize;
        offsets.push(0);
        for (slot, _) in &slots {
            at += slot;
            offsets.push(at);
        }
        // Everything is written into a local image, then copied in once.
        let mut image = vec![0u8; size];
        image[..8].copy_from_slice(&(n as i64).to_ne_bytes());
        for (i, off) in offsets.iter().enumerate() {
            image[8 + 8 * i..16 + 8 * i].copy_from_slice(&(*off as i64).to_ne_bytes());
        }
        let data = 8 * (n + 2);
        let formats = data + at;
        let codes = formats + 8 * n;
        for (i, (item, (_, fmt))) in items.iter().zip(&slots).enumerate() {
            let slot = &mut image[data + offsets[i]..data + offsets[i + 1]];
            match item.payload() {
                Some(p) => slot[..p.len()].copy_from_slice(p),
                None => slot[..8].copy_from_slice(&fixed_bytes(item)),
            }
            image[formats + 8 * i..formats + 8 * i + fmt.len()].copy_from_slice(fmt);
            image[codes + i] = code_of(item);
        }
        shm.write_at(0, &image)?;
        Ok(ShareableList {
            shm,
            len: n,
            offsets,
        })
    }

    /// Opens the list in the existing segment `name` (Python's
    /// `ShareableList(name=name)`), made by this crate or by Python.
    /// Dropping it never removes the segment.
    pub fn open(name: &str) -> Result<ShareableList, ShareableListError> {
        Self::from_shm(SharedMemory::attach(name)?)
    }

    /// The list in the segment `shm`, after checking its header.
    pub fn from_shm(shm: SharedMemory) -> Result<ShareableList, ShareableListError> {
        let size = shm.size();
        let corrupt = |what: String| ShareableListError::Corrupt(what);
        let word = |at: usize| -> Result<i64, ShareableListError> {
            let mut b = [0u8; 8];
            shm.read_at(at, &mut b)
                .map_err(|_| corrupt(format!("the segment ends before byte {}", at + 8)))?;
            Ok(i64::from_ne_bytes(b))
        };
        let count = word(0)?;
        // The header alone needs (n + 2) words, so n is bounded by the
        // segment's size before anything is allocated.
        let n = usize::try_from(count)
            .ok()
            .filter(|&n| n <= size / 8)
            .ok_or_else(|| corrupt(format!("item count {count} does not fit the segment")))?;
        let data = 8 * (n + 2);
        let mut header = vec![0u8; 8 * (n + 1)];
        shm.read_at(8, &mut header)
            .map_err(|_| corrupt(format!("{n} items need more than {size} bytes")))?;
        let mut offsets = Vec::with_capacity(n + 1);
        for (i, w) in header.chunks_exact(8).enumerate() {
            let v = i64::from_ne_bytes(w.try_into().unwrap_or([0; 8]));
            let off = usize::try_from(v).map_err(|_| corrupt(format!("item {i} starts at {v}")))?;
            if let Some(&prev) = offsets.last()
                && (off < prev || off - prev < ALIGN)
            {
                return Err(corrupt(format!(
                    "item {} has a slot of {} bytes",
                    i - 1,
                    off as i128 - prev as i128
                )));
            }
            offsets.push(off);
        }
        let end = offsets[n]
            .checked_add(data)
            .and_then(|x| x.checked_add(9 * n))
            .filter(|&x| x <= size);
        if end.is_none() {
            return Err(corrupt(format!(
                "{n} items with {} bytes of data do not fit {size} bytes",
                offsets[n]
            )));
        }
        Ok(ShareableList {
            shm,
            len: n,
            offsets,
        })
    }

    /// The number of items (fixed at creation).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list has no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The segment's name, for [`open`](Self::open) or Python's
    /// `ShareableList(name=...)`.
    pub fn name(&self) -> &str {
        self.shm.name()
    }

    /// The segment (Python's `.shm`).
    pub fn shm(&self) -> &SharedMemory {
        &self.shm
    }

    fn data(&self) -> usize {
        8 * (self.len + 2)
    }

    fn formats(&self) -> usize {
        self.data() + self.offsets[self.len]
    }

    fn check(&self, index: usize) -> Result<(), ShareableListError> {
        if index < self.len {
            Ok(())
        } else {
            Err(IndexError {
                index,
                len: self.len,
            }
            .into())
        }
    }

    /// Item `index`'s format, without its NUL padding.
    fn format(&self, index: usize) -> Result<Vec<u8>, ShareableListError> {
        let mut f = [0u8; 8];
        self.shm.read_at(self.formats() + 8 * index, &mut f)?;
        let len = f.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        Ok(f[..len].to_vec())
    }

    /// The item at `index`.
    pub fn get(&self, index: usize) -> Result<ShareableItem, ShareableListError> {
        self.check(index)?;
        let fmt = self.format(index)?;
        let mut code = [0u8; 1];
        self.shm
            .read_at(self.formats() + 8 * self.len + index, &mut code)?;
        let start = self.data() + self.offsets[index];
        let slot = self.offsets[index + 1] - self.offsets[index];
        let bad = |why: &str| {
            ShareableListError::Corrupt(format!(
                "item {index}: {why} (format {:?}, kind {})",
                String::from_utf8_lossy(&fmt),
                code[0] as i8
            ))
        };
        let fixed = || -> Result<[u8; 8], ShareableListError> {
            let mut b = [0u8; 8];
            self.shm.read_at(start, &mut b)?;
            Ok(b)
        };
        match (fmt.as_slice(), code[0]) {
            (FMT_INT, CODE_VALUE) => Ok(ShareableItem::Int(i64::from_ne_bytes(fixed()?))),
            (FMT_FLOAT, CODE_VALUE) => Ok(ShareableItem::Float(f64::from_ne_bytes(fixed()?))),
            (FMT_BOOL, CODE_VALUE) => Ok(ShareableItem::Bool(fixed()?[7] != 0)),
            (FMT_NONE, CODE_NONE) => Ok(ShareableItem::None),
            ([digits @ .., b's'], CODE_STR | CODE_BYTES) => {
                let n: usize = std::str::from_utf8(digits)
                    .ok()
                    .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|d| d.parse().ok())
                    .ok_or_else(|| bad("unknown format"))?;
                if n > slot {
                    return Err(bad("longer than its slot"));
                }
                let mut b = vec![0u8; n];
                self.shm.read_at(start, &mut b)?;
                let keep = b.iter().rposition(|&x| x != 0).map_or(0, |p| p + 1);
                b.truncate(keep);
                if code[0] == CODE_BYTES {
                    return Ok(ShareableItem::Bytes(b));
                }
                String::from_utf8(b)
                    .map(ShareableItem::Str)
                    .map_err(|_| ShareableListError::Utf8 { index })
            }
            _ => Err(bad("not a format and kind Python writes")),
        }
    }

    /// Replaces the item at `index` (Python's `list[index] = item`). The
    /// type may change; a string or byte string must fit the slot, whose
    /// size was fixed at creation (else [`ShareableListError::TooLong`]).
    pub fn set(&self, index: usize, item: ShareableItem) -> Result<(), ShareableListError> {
        self.check(index)?;
        let start = self.data() + self.offsets[index];
        let slot = self.offsets[index + 1] - self.offsets[index];
        let fmt = match item.payload() {
            Some(p) => {
                if p.len() > slot {
                    return Err(ShareableListError::TooLong {
                        index,
                        len: p.len(),
                        capacity: slot,
                    });
                }
                let f = format!("{slot}s").into_bytes();
                if f.len() > 8 {
                    return Err(ShareableListError::Corrupt(format!(
                        "item {index} has a slot of {slot} bytes"
                    )));
                }
                f
            }
            None => fixed_format(&item).to_vec(),
        };
        // Python's order: format and kind, then the value.
        let mut f = [0u8; 8];
        f[..fmt.len()].copy_from_slice(&fmt);
        self.shm.write_at(self.formats() + 8 * index, &f)?;
        self.shm
            .write_at(self.formats() + 8 * self.len + index, &[code_of(&item)])?;
        match item.payload() {
            Some(p) => {
                let mut b = vec![0u8; slot];
                b[..p.len()].copy_from_slice(p);
                self.shm.write_at(start, &b)?;
            }
            None => self.shm.write_at(start, &fixed_bytes(&item))?,
        }
        Ok(())
    }

    /// Every item, in order.
    pub fn to_vec(&self) -> Result<Vec<ShareableItem>, ShareableListError> {
        (0..self.len).map(|i| self.get(i)).collect()
    }

    /// How many items equal `item` (Python's `count`).
    pub fn count(&self, item: &ShareableItem) -> Result<usize, ShareableListError> {
        let mut n = 0;
        for i in 0..self.len {
            n += usize::from(self.get(i)? == *item);
        }
        Ok(n)
    }

    /// The index of the first item equal to `item`, if any (Python's
    /// `index`, which raises `ValueError` where this gives `None`).
    pub fn index(&self, item: &ShareableItem) -> Result<Option<usize>, ShareableListError> {
        for i in 0..self.len {
            if self.get(i)? == *item {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// The formats of all items, joined (Python's `format` property), e.g.
    /// `"q8sxxxxxx?x"`.
    pub fn format_string(&self) -> Result<String, ShareableListError> {
        let mut s = String::new();
        for i in 0..self.len {
            s.push_str(&String::from_utf8_lossy(&self.format(i)?));
        }
        Ok(s)
    }
}

/// Python's `repr`: `ShareableList([1, 'a', None])` (items that cannot be
/// read show as `<error>`).
impl fmt::Display for ShareableList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShareableList([")?;
        for i in 0..self.len {
            if i > 0 {
                f.write_str(", ")?;
            }
            match self.get(i) {
                Ok(item) => write!(f, "{item}")?,
                Err(_) => f.write_str("<error>")?,
            }
        }
        f.write_str("])")
    }
}

impl fmt::Debug for ShareableList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShareableList")
            .field("name", &self.name())
            .field("len", &self.len)
            .finish()
    }
}

/// A `ShareableList` travels as its segment's handle; the receiver checks
/// the header again and is an attacher.
impl Serialize for ShareableList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.shm.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ShareableList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let shm = SharedMemory::deserialize(d)?;
        ShareableList::from_shm(shm).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_cpython() {
        // What CPython 3.11 writes for ShareableList([1, 'ab', None]):
        // count, offsets [0, 8, 16, 24], data, formats, codes.
        let items = vec![ShareableItem::Int(1), "ab".into(), ShareableItem::None];
        let l = ShareableList::new(items.clone()).unwrap();
        let mut b = vec![0u8; ShareableList::size_for(&items).unwrap()];
        assert_eq!(b.len(), 8 + 32 + 24 + 24 + 3);
        l.shm().read_at(0, &mut b).unwrap();
        let w = |i: usize| i64::from_ne_bytes(b[8 * i..8 * i + 8].try_into().unwrap());
        assert_eq!([w(0), w(1), w(2), w(3), w(4)], [3, 0, 8, 16, 24]);
        assert_eq!(w(5), 1);
        assert_eq!(&b[48..50], b"ab");
        assert_eq!(&b[64..72], b"q\0\0\0\0\0\0\0");
        assert_eq!(&b[72..74], b"8s");
        assert_eq!(&b[80..88], b"xxxxxx?x");
        assert_eq!(&b[88..91], &[0, 1, 3]);
        assert_eq!(l.format_string().unwrap(), "q8sxxxxxx?x");
        assert_eq!(l.to_vec().unwrap(), items);
    }

    #[test]
    fn type_changes_follow_python() {
        let l = ShareableList::new(vec![ShareableItem::Int(7), "hello world".into()]).unwrap();
        l.set(0, "8 bytes!".into()).unwrap();
        assert_eq!(l.get(0).unwrap(), ShareableItem::Str("8 bytes!".into()));
        assert!(matches!(
            l.set(0, "9 bytes!!".into()),
            Err(ShareableListError::TooLong {
                index: 0,
                len: 9,
                capacity: 8
            })
        ));
        l.set(1, ShareableItem::Bool(true)).unwrap();
        l.set(0, ShareableItem::Float(-0.5)).unwrap();
        l.set(1, b"bytes\0".to_vec().into()).unwrap();
        assert_eq!(
            l.to_vec().unwrap(),
            [
                ShareableItem::Float(-0.5),
                ShareableItem::Bytes(b"bytes".to_vec())
            ]
        );
        assert_eq!(l.count(&ShareableItem::Float(-0.5)).unwrap(), 1);
        assert_eq!(
            l.index(&ShareableItem::Bytes(b"bytes".to_vec())).unwrap(),
            Some(1)
        );
        assert_eq!(l.index(&ShareableItem::None).unwrap(), None);
        assert!(matches!(l.get(2), Err(ShareableListError::Index(_))));
        assert!(l.set(5, ShareableItem::None).is_err());
    }

    #[test]
    fn empty_and_non_ascii() {
        let l = ShareableList::new(vec![]).unwrap();
        assert!(l.is_empty());
        assert_eq!(ShareableList::open(l.name()).unwrap().len(), 0);
        let s = "日日日".to_string();
        let l = ShareableList::new(vec![s.clone().into()]).unwrap();
        assert_eq!(l.get(0).unwrap(), ShareableItem::Str(s));
    }
}
