//! [`Handle`]: what every proxy holds — a counted reference to an object on
//! a server, and a path into it — and how it travels to other processes.
//!
//! In-process, clones share one reference (an `Arc`); the last clone to go
//! tells the server. Serialised (as a `Process` argument, inside a
//! message, …) a handle becomes the server's address and authkey, the
//! object id and path, and a *transit token*: the sender first takes an
//! extra reference on the server for the handle in flight, and the
//! receiving process claims it for its own session when it decodes the
//! handle. So an object cannot vanish between the sender dropping its
//! proxy and the receiver starting to use it.

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::client::{Endpoint, as_id};
use super::error::ManagerError;
use super::protocol::{Op, Path, Request};
use super::value::Value;
use crate::connection::Address;
use crate::sys;

/// One reference, held by this process, to an object on a server.
pub(crate) struct Ref {
    pub endpoint: Arc<Endpoint>,
    pub id: u64,
    /// The process whose session holds the reference (none when a transit
    /// claim failed).
    holder: Option<i32>,
}

impl Ref {
    /// A reference this process's session already holds (just created).
    pub fn held(endpoint: Arc<Endpoint>, id: u64) -> Arc<Ref> {
        Arc::new(Ref {
            endpoint,
            id,
            holder: Some(sys::process::getpid()),
        })
    }
}

impl Drop for Ref {
    fn drop(&mut self) {
        if self.holder == Some(sys::process::getpid()) {
            // A server that is gone has freed everything anyway.
            let _ = self.endpoint.call(&Request::Decref { id: self.id });
        }
    }
}

/// A counted reference plus a path into the object.
#[derive(Clone)]
pub(crate) struct Handle {
    pub r: Arc<Ref>,
    pub path: Arc<Path>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("address", &self.r.endpoint.address)
            .field("id", &self.r.id)
            .field("path", &self.path)
            .finish()
    }
}

impl Handle {
    pub fn new(r: Arc<Ref>) -> Self {
        Handle {
            r,
            path: Arc::new(Vec::new()),
        }
    }

    /// A handle on the part of this object at `key` (same reference).
    pub fn child(&self, key: Value) -> Handle {
        let mut path = (*self.path).clone();
        path.push(key);
        Handle {
            r: self.r.clone(),
            path: Arc::new(path),
        }
    }

    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.r.endpoint
    }

    /// Runs one operation.
    pub fn call(&self, op: Op) -> Result<Value, ManagerError> {
        self.r.endpoint.call(&Request::Call {
            id: self.r.id,
            path: (*self.path).clone(),
            op,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct Wire {
    address: String,
    authkey: Option<Vec<u8>>,
    id: u64,
    path: Path,
    token: u64,
}

impl Serialize for Handle {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ep = &self.r.endpoint;
        // A failed export (server gone) still serialises: the receiver's
        // calls then fail as this process's would.
        let token = ep
            .call(&Request::Export { id: self.r.id })
            .and_then(as_id)
            .unwrap_or(0);
        Wire {
            address: ep.address.to_string(),
            authkey: ep.authkey.clone(),
            id: self.r.id,
            path: (*self.path).clone(),
            token,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Handle {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        let address: Address = w.address.parse().map_err(serde::de::Error::custom)?;
        let endpoint = Endpoint::get(address, w.authkey);
        let claimed = w.token != 0 && endpoint.call(&Request::Claim { token: w.token }).is_ok();
        let r = Arc::new(Ref {
            endpoint,
            id: w.id,
            holder: claimed.then(sys::process::getpid),
        });
        Ok(Handle {
            r,
            path: Arc::new(w.path),
        })
    }
}

/// Implements `from_handle`, `Clone`, `Serialize`, `Deserialize` and
/// `Debug` for a proxy type that wraps a `Handle` in a field `h` (with a
/// `PhantomData` field `_t` for the type parameters, if any).
macro_rules! proxy_common {
    ($name:ident) => {
        impl $name {
            pub(crate) fn from_handle(h: $crate::manager::handle::Handle) -> Self {
                $name { h }
            }
        }

        $crate::manager::handle::proxy_common!(@traits $name);
    };
    ($name:ident < $($t:ident),* >) => {
        impl< $($t),* > $name< $($t),* > {
            pub(crate) fn from_handle(h: $crate::manager::handle::Handle) -> Self {
                $name { h, _t: std::marker::PhantomData }
            }
        }

        $crate::manager::handle::proxy_common!(@traits $name< $($t),* >);
    };
    (@traits $name:ident $(< $($t:ident),* >)?) => {
        impl $(< $($t),* >)? Clone for $name $(< $($t),* >)? {
            fn clone(&self) -> Self {
                Self::from_handle(self.h.clone())
            }
        }

        impl $(< $($t),* >)? serde::Serialize for $name $(< $($t),* >)? {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.h.serialize(s)
            }
        }

        impl<'de $($(, $t)*)?> serde::Deserialize<'de> for $name $(< $($t),* >)? {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok(Self::from_handle($crate::manager::handle::Handle::deserialize(d)?))
            }
        }

        impl $(< $($t),* >)? std::fmt::Debug for $name $(< $($t),* >)? {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_tuple(stringify!($name)).field(&self.h).finish()
            }
        }
    };
}
pub(crate) use proxy_common;
