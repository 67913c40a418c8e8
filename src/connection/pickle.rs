//! Pickled messages on a connection, for a Python peer (the pickle codec
//! itself is `codec::pickle`).

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Connection;
use crate::codec::pickle::{Value, from_slice, to_vec, value_from_slice, value_to_vec};

/// The pickle codec on a [`Connection`], for a Python
/// peer's `conn.send(obj)` / `conn.recv()`.
impl Connection {
    /// Sends `value` as one pickled message, which Python's `conn.recv()`
    /// returns as the corresponding object (see [`to_vec`](crate::codec::pickle::to_vec)).
    ///
    /// ```
    /// let (a, b) = multiproc::pipe()?;
    /// a.send_pickle(&("job", 7, vec![1.5, 2.5]))?;
    /// let got: (String, u32, Vec<f64>) = b.recv_pickle()?;
    /// assert_eq!(got, ("job".into(), 7, vec![1.5, 2.5]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_pickle<T: Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<(), crate::error::SendError> {
        let bytes = to_vec(value).map_err(crate::error::CodecError::from)?;
        self.send_bytes(&bytes)
    }

    /// Receives one message sent by Python's `conn.send(obj)` (or by
    /// [`send_pickle`](Self::send_pickle)) and unpickles it as `T`. A
    /// pickle that is not plain data is refused, never run: see
    /// [`from_slice`](crate::codec::pickle::from_slice). Errors are [`RecvError::Codec`](crate::RecvError::Codec)
    /// holding a [`PickleError`](crate::codec::pickle::PickleError).
    pub fn recv_pickle<T: DeserializeOwned>(&self) -> Result<T, crate::error::RecvError> {
        let bytes = self.recv_bytes()?;
        Ok(from_slice(&bytes).map_err(crate::error::CodecError::from)?)
    }

    /// Sends a dynamic [`Value`] as one pickled message (a Python set,
    /// frozenset, bytes or big integer, which serde types do not express).
    pub fn send_pickle_value(&self, value: &Value) -> Result<(), crate::error::SendError> {
        let bytes = value_to_vec(value).map_err(crate::error::CodecError::from)?;
        self.send_bytes(&bytes)
    }

    /// Receives one pickled message as a dynamic [`Value`], keeping
    /// Python's types (see [`value_from_slice`](crate::codec::pickle::value_from_slice)).
    ///
    /// ```
    /// use multiproc::codec::pickle::Value;
    ///
    /// let (a, b) = multiproc::pipe()?;
    /// a.send_pickle_value(&Value::Bytes(b"raw".to_vec()))?;
    /// assert_eq!(b.recv_pickle_value()?, Value::Bytes(b"raw".to_vec()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_pickle_value(&self) -> Result<Value, crate::error::RecvError> {
        let bytes = self.recv_bytes()?;
        Ok(value_from_slice(&bytes).map_err(crate::error::CodecError::from)?)
    }

    /// Like [`recv_pickle`](Self::recv_pickle), giving up with
    /// [`RecvError::Timeout`](crate::RecvError::Timeout) after `timeout`.
    pub fn recv_pickle_timeout<T: DeserializeOwned>(
        &self,
        timeout: std::time::Duration,
    ) -> Result<T, crate::error::RecvError> {
        let bytes = self.recv_bytes_timeout(timeout)?;
        Ok(from_slice(&bytes).map_err(crate::error::CodecError::from)?)
    }
}
