//! Operations on value trees: the server side of lists, dicts, namespaces,
//! values and arrays. A path of keys/indices selects the part of the tree
//! an operation applies to, which is how a list inside a dict is reached as
//! a live proxy.

use crate::manager::protocol::{DataKind, Fault, Op, Reply};
use crate::manager::value::{Dict, Value};

/// Normalises a Python-style index (negative counts from the end).
fn index(len: usize, key: &Value) -> Result<usize, Fault> {
    let Value::Int(i) = key else {
        return Err(Fault::Type(format!(
            "list indices must be integers, not {}",
            key.type_name()
        )));
    };
    let n = len as i128;
    let j = if *i < 0 { i + n } else { *i };
    if j < 0 || j >= n {
        return Err(Fault::Index(format!(
            "index {i} out of range for length {len}"
        )));
    }
    Ok(j as usize)
}

/// The part of `root` that `path` names.
pub(crate) fn navigate<'a>(root: &'a mut Value, path: &[Value]) -> Result<&'a mut Value, Fault> {
    let mut at = root;
    for key in path {
        at = match at {
            Value::List(v) | Value::Tuple(v) => {
                let i = index(v.len(), key)?;
                &mut v[i]
            }
            Value::Dict(d) => d.get_mut(key).ok_or_else(|| Fault::Key(key.repr()))?,
            other => {
                return Err(Fault::Type(format!(
                    "{} object is not subscriptable",
                    other.type_name()
                )));
            }
        };
    }
    Ok(at)
}

fn list(v: &mut Value) -> Result<&mut Vec<Value>, Fault> {
    match v {
        Value::List(l) => Ok(l),
        other => Err(Fault::Type(format!(
            "expected a list, found {}",
            other.type_name()
        ))),
    }
}

fn seq(v: &Value) -> Result<&[Value], Fault> {
    match v {
        Value::List(l) | Value::Tuple(l) => Ok(l),
        other => Err(Fault::Type(format!(
            "expected a list, found {}",
            other.type_name()
        ))),
    }
}

fn dict(v: &mut Value) -> Result<&mut Dict, Fault> {
    match v {
        Value::Dict(d) => Ok(d),
        other => Err(Fault::Type(format!(
            "expected a dict, found {}",
            other.type_name()
        ))),
    }
}

fn arith(a: &Value, b: &Value, mul: bool) -> Result<Value, Fault> {
    let overflow = || Fault::Arithmetic("integer overflow".into());
    Ok(match (a, b) {
        (Value::Int(x), Value::Int(y)) => Value::Int(if mul {
            x.checked_mul(*y).ok_or_else(overflow)?
        } else {
            x.checked_add(*y).ok_or_else(overflow)?
        }),
        (Value::Float(x), Value::Float(y)) => Value::Float(if mul { x * y } else { x + y }),
        (Value::Int(x), Value::Float(y)) | (Value::Float(y), Value::Int(x)) => {
            let x = *x as f64;
            Value::Float(if mul { x * y } else { x + y })
        }
        (Value::Str(x), Value::Str(y)) if !mul => Value::Str(format!("{x}{y}")),
        (Value::List(x), Value::List(y)) if !mul => {
            Value::List(x.iter().chain(y).cloned().collect())
        }
        // A non-empty `Vec<u8>` is stored as bytes, an empty one as `[]`.
        (Value::Bytes(x), Value::Bytes(y)) if !mul => {
            Value::Bytes(x.iter().chain(y).copied().collect())
        }
        (Value::Bytes(x), Value::List(e)) | (Value::List(e), Value::Bytes(x))
            if !mul && e.is_empty() =>
        {
            Value::Bytes(x.clone())
        }
        _ => {
            return Err(Fault::Arithmetic(format!(
                "unsupported operand types for {}: {} and {}",
                if mul { "*" } else { "+" },
                a.type_name(),
                b.type_name()
            )));
        }
    })
}

/// `at[key] op= operand` (or `at op= operand`), returning the new value.
fn update(at: &mut Value, key: Option<Value>, operand: &Value, mul: bool) -> Result<Value, Fault> {
    let target = match &key {
        None => at,
        Some(k) => navigate(at, std::slice::from_ref(k))?,
    };
    let new = arith(target, operand, mul)?;
    *target = new.clone();
    Ok(new)
}

fn found(v: Option<Value>) -> Value {
    Value::List(v.into_iter().collect())
}

/// Python's `Namespace.__repr__`: public attributes as `name=repr`, sorted.
pub(crate) fn namespace_repr(v: &Value) -> String {
    let mut parts: Vec<String> = match v {
        Value::Dict(d) => d
            .iter()
            .filter_map(|(k, v)| match k {
                Value::Str(name) if !name.starts_with('_') => Some(format!("{name}={}", v.repr())),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    parts.sort();
    format!("Namespace({})", parts.join(", "))
}

/// Applies `op` to the part of `root` named by `path`.
pub(crate) fn apply(root: &mut Value, kind: DataKind, path: &[Value], op: Op) -> Reply {
    let at = navigate(root, path)?;
    match op {
        Op::Get => Ok(at.clone()),
        Op::Set(v) => {
            *at = v;
            Ok(Value::None)
        }
        Op::Len => len(at),
        Op::Item(key) => Ok(navigate(at, std::slice::from_ref(&key))?.clone()),
        Op::Lookup(key) => Ok(found(dict(at)?.get(&key).cloned())),
        Op::SetItem(key, v) => set_item(at, key, v),
        Op::DelItem { key, lenient } => del_item(at, key, lenient),
        Op::Append(v) => {
            list(at)?.push(v);
            Ok(Value::None)
        }
        Op::Extend(vs) => {
            list(at)?.extend(vs);
            Ok(Value::None)
        }
        Op::Insert(i, v) => insert(at, i, v),
        Op::Pop(i) => pop(at, i),
        Op::Remove(v) => remove(at, &v),
        Op::Index(v) => position(at, &v),
        Op::Count(v) => Ok(Value::Int(
            seq(at)?.iter().filter(|x| **x == v).count() as i128
        )),
        Op::Contains(v) => contains(at, &v),
        Op::Sort { reverse } => sort(at, reverse),
        Op::Reverse => {
            list(at)?.reverse();
            Ok(Value::None)
        }
        Op::Clear => clear(at),
        Op::Keys => Ok(Value::List(dict(at)?.keys().cloned().collect())),
        Op::Values => Ok(Value::List(dict(at)?.values().cloned().collect())),
        Op::Items => items(at),
        Op::Update(pairs) => {
            dict(at)?.extend(pairs);
            Ok(Value::None)
        }
        Op::SetDefault(k, v) => Ok(dict(at)?.entry(k).or_insert(v).clone()),
        Op::Add(key, operand) => update(at, key, &operand, false),
        Op::Mul(key, operand) => update(at, key, &operand, true),
        Op::Repr => Ok(Value::Str(
            if kind == DataKind::Namespace && path.is_empty() {
                namespace_repr(at)
            } else {
                at.repr()
            },
        )),
        other => Err(Fault::Unsupported(format!(
            "{other:?} is not an operation on a {}",
            at.type_name()
        ))),
    }
}

/// `Len`: Python's `len(at)`.
fn len(at: &Value) -> Reply {
    let n = match at {
        Value::List(v) | Value::Tuple(v) => v.len(),
        Value::Dict(d) => d.len(),
        Value::Str(s) => s.chars().count(),
        Value::Bytes(b) => b.len(),
        other => {
            return Err(Fault::Type(format!(
                "object of type {} has no len()",
                other.type_name()
            )));
        }
    };
    Ok(Value::Int(n as i128))
}

/// `SetItem`: `at[key] = v`.
fn set_item(at: &mut Value, key: Value, v: Value) -> Reply {
    match at {
        Value::List(l) => {
            let i = index(l.len(), &key)?;
            l[i] = v;
        }
        Value::Dict(d) => {
            d.insert(key, v);
        }
        other => {
            return Err(Fault::Type(format!(
                "{} object does not support item assignment",
                other.type_name()
            )));
        }
    }
    Ok(Value::None)
}

/// `DelItem`: `del at[key]`, returning the removed value (`lenient`: a
/// missing dict key is no error, and the reply says whether one was found).
fn del_item(at: &mut Value, key: Value, lenient: bool) -> Reply {
    match at {
        Value::List(l) => {
            let i = index(l.len(), &key)?;
            Ok(l.remove(i))
        }
        Value::Dict(d) => {
            let old = d.shift_remove(&key);
            if lenient {
                Ok(found(old))
            } else {
                old.ok_or_else(|| Fault::Key(key.repr()))
            }
        }
        other => Err(Fault::Type(format!(
            "{} object does not support item deletion",
            other.type_name()
        ))),
    }
}

/// `Insert`: Python's `list.insert` (an index past either end clamps).
fn insert(at: &mut Value, i: i64, v: Value) -> Reply {
    let l = list(at)?;
    let n = l.len() as i64;
    let j = if i < 0 { (i + n).max(0) } else { i.min(n) };
    l.insert(j as usize, v);
    Ok(Value::None)
}

/// `Pop`: Python's `list.pop` (the last element by default).
fn pop(at: &mut Value, i: Option<i64>) -> Reply {
    let l = list(at)?;
    if l.is_empty() {
        return Err(Fault::Index("pop from empty list".into()));
    }
    let j = match i {
        None => l.len() - 1,
        Some(i) => index(l.len(), &Value::Int(i.into()))?,
    };
    Ok(l.remove(j))
}

/// `Remove`: Python's `list.remove`, the first element equal to `v`.
fn remove(at: &mut Value, v: &Value) -> Reply {
    let l = list(at)?;
    let Some(i) = l.iter().position(|x| x == v) else {
        return Err(Fault::NotFound(format!("{} is not in list", v.repr())));
    };
    l.remove(i);
    Ok(Value::None)
}

/// `Index`: Python's `list.index`.
fn position(at: &Value, v: &Value) -> Reply {
    match seq(at)?.iter().position(|x| x == v) {
        Some(i) => Ok(Value::Int(i as i128)),
        None => Err(Fault::NotFound(format!("{} is not in list", v.repr()))),
    }
}

/// `Contains`: Python's `v in at`.
fn contains(at: &Value, v: &Value) -> Reply {
    Ok(Value::Bool(match at {
        Value::Dict(d) => d.contains_key(v),
        Value::Str(s) => matches!(v, Value::Str(sub) if s.contains(sub.as_str())),
        other => seq(other)?.contains(v),
    }))
}

/// `Sort`: Python's `list.sort`.
fn sort(at: &mut Value, reverse: bool) -> Reply {
    let l = list(at)?;
    l.sort();
    if reverse {
        l.reverse();
    }
    Ok(Value::None)
}

/// `Clear`: empties a list or dict.
fn clear(at: &mut Value) -> Reply {
    match at {
        Value::List(l) => l.clear(),
        Value::Dict(d) => d.clear(),
        other => {
            return Err(Fault::Type(format!(
                "{} object cannot be cleared",
                other.type_name()
            )));
        }
    }
    Ok(Value::None)
}

/// `Items`: a dict's entries as `(key, value)` tuples.
fn items(at: &mut Value) -> Reply {
    Ok(Value::List(
        dict(at)?
            .iter()
            .map(|(k, v)| Value::Tuple(vec![k.clone(), v.clone()]))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::value::to_value;

    #[test]
    fn nested_paths_reach_inner_containers() {
        let mut root = to_value(
            &[("k", vec![1, 2])]
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>(),
        )
        .unwrap();
        let k = Value::Str("k".into());
        apply(
            &mut root,
            DataKind::Dict,
            std::slice::from_ref(&k),
            Op::Append(Value::Int(3)),
        )
        .unwrap();
        let got = apply(&mut root, DataKind::Dict, &[k], Op::Get).unwrap();
        assert_eq!(got.repr(), "[1, 2, 3]");
    }

    #[test]
    fn namespace_prints_sorted_like_python() {
        let mut ns = Value::Dict(Dict::new());
        for (n, v) in [
            ("y", Value::Int(1)),
            ("x", Value::Int(1)),
            ("_h", Value::None),
        ] {
            apply(
                &mut ns,
                DataKind::Namespace,
                &[],
                Op::SetItem(Value::Str(n.into()), v),
            )
            .unwrap();
        }
        let r = apply(&mut ns, DataKind::Namespace, &[], Op::Repr).unwrap();
        assert_eq!(r, Value::Str("Namespace(x=1, y=1)".into()));
    }

    #[test]
    fn arithmetic_is_checked() {
        let mut v = Value::Int(i128::MAX);
        assert!(matches!(
            apply(&mut v, DataKind::Value, &[], Op::Add(None, Value::Int(1))),
            Err(Fault::Arithmetic(_))
        ));
        let mut f = Value::Int(2);
        let r = apply(
            &mut f,
            DataKind::Value,
            &[],
            Op::Mul(None, Value::Float(1.5)),
        )
        .unwrap();
        assert_eq!(r, Value::Float(3.0));
    }
}
