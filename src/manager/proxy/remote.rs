//! [`RemoteObject`]: a proxy on an object of a registered type (Python's
//! `AutoProxy`).

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{dec, enc};
use crate::manager::error::ManagerError;
use crate::manager::handle::{Handle, proxy_common};
use crate::manager::protocol::Op;

/// An object of a type registered with
/// [`ManagerBuilder::register`](crate::manager::ManagerBuilder::register),
/// whose methods are called by name.
pub struct RemoteObject {
    pub(crate) h: Handle,
}

proxy_common!(RemoteObject);

impl RemoteObject {
    /// Calls `method` with `args` on the server and converts the result.
    /// A method's `Err` comes back as [`ManagerError::Remote`].
    pub fn call<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<R, ManagerError> {
        dec(self.h.call(Op::Method(method.to_string(), enc(args)?))?)
    }
}
