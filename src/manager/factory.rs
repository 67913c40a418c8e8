//! [`Factory`]: makes a manager's objects, anonymous or named.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::client::{Endpoint, as_id};
use super::error::ManagerError;
use super::handle::{Handle, Ref};
use super::protocol::{DataKind, Kind, Request};
use super::proxy::{
    ArrayProxy, BarrierProxy, BoundedSemaphoreProxy, ConditionProxy, DictProxy, EventProxy,
    JoinableQueueProxy, ListProxy, LockProxy, Namespace, QueueProxy, RLockProxy, RemoteObject,
    SemaphoreProxy, ValueProxy, enc,
};
use super::value::{Dict, Value};

/// Makes objects on a manager's server: every
/// [`Manager`](super::Manager) is one (through `Deref`), and
/// [`Manager::named`](super::Manager::named) gives one whose objects are
/// named.
#[derive(Debug, Clone)]
pub struct Factory {
    pub(crate) endpoint: Arc<Endpoint>,
    pub(crate) name: Option<String>,
}

impl Factory {
    pub(crate) fn new(endpoint: Arc<Endpoint>) -> Self {
        Factory {
            endpoint,
            name: None,
        }
    }

    fn new_object(&self, kind: Kind) -> Result<Handle, ManagerError> {
        let request = match &self.name {
            None => Request::Create(kind),
            Some(name) => Request::Named {
                name: name.clone(),
                kind,
            },
        };
        let id = as_id(self.endpoint.call(&request)?)?;
        Ok(Handle::new(Ref::held(self.endpoint.clone(), id)))
    }

    fn data(&self, kind: DataKind, value: Value) -> Result<Handle, ManagerError> {
        self.new_object(Kind::Data(kind, value))
    }

    fn new_semaphore(&self, value: usize, bounded: bool) -> Result<Handle, ManagerError> {
        self.new_object(Kind::Semaphore {
            value: value as u64,
            bounded,
        })
    }

    /// A new list holding `items` (Python's `manager.list(items)`).
    pub fn list<T: Serialize + DeserializeOwned>(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> Result<ListProxy<T>, ManagerError> {
        let items = items
            .into_iter()
            .map(|x| enc(&x))
            .collect::<Result<_, _>>()?;
        Ok(ListProxy::from_handle(
            self.data(DataKind::List, Value::List(items))?,
        ))
    }

    /// A new dict holding `entries` (Python's `manager.dict(entries)`).
    pub fn dict<K, V>(
        &self,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<DictProxy<K, V>, ManagerError>
    where
        K: Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        let mut d = Dict::new();
        for (k, v) in entries {
            d.insert(enc(&k)?, enc(&v)?);
        }
        Ok(DictProxy::from_handle(
            self.data(DataKind::Dict, Value::Dict(d))?,
        ))
    }

    /// A new, empty namespace (Python's `manager.Namespace()`).
    pub fn namespace(&self) -> Result<Namespace, ManagerError> {
        Ok(Namespace::from_handle(
            self.data(DataKind::Namespace, Value::Dict(Dict::new()))?,
        ))
    }

    /// A new value (Python's `manager.Value(typecode, value)`; the type
    /// plays the typecode's part).
    pub fn value<T: Serialize + DeserializeOwned>(
        &self,
        value: T,
    ) -> Result<ValueProxy<T>, ManagerError> {
        Ok(ValueProxy::from_handle(
            self.data(DataKind::Value, enc(&value)?)?,
        ))
    }

    /// A new fixed-length array (Python's `manager.Array(typecode, items)`).
    pub fn array<T: Serialize + DeserializeOwned>(
        &self,
        items: &[T],
    ) -> Result<ArrayProxy<T>, ManagerError> {
        let items = items.iter().map(enc).collect::<Result<_, _>>()?;
        Ok(ArrayProxy::from_handle(
            self.data(DataKind::Array, Value::List(items))?,
        ))
    }

    /// A new queue holding at most `maxsize` items (0: unbounded).
    pub fn queue<T: Serialize + DeserializeOwned>(
        &self,
        maxsize: usize,
    ) -> Result<QueueProxy<T>, ManagerError> {
        Ok(QueueProxy::from_handle(self.new_object(Kind::Queue {
            maxsize: maxsize as u64,
            joinable: false,
        })?))
    }

    /// A new joinable queue holding at most `maxsize` items (0:
    /// unbounded).
    pub fn joinable_queue<T: Serialize + DeserializeOwned>(
        &self,
        maxsize: usize,
    ) -> Result<JoinableQueueProxy<T>, ManagerError> {
        Ok(JoinableQueueProxy::from_handle(self.new_object(
            Kind::Queue {
                maxsize: maxsize as u64,
                joinable: true,
            },
        )?))
    }

    /// A new lock.
    pub fn lock(&self) -> Result<LockProxy, ManagerError> {
        Ok(LockProxy::from_handle(self.new_object(Kind::Lock)?))
    }

    /// A new re-entrant lock.
    pub fn rlock(&self) -> Result<RLockProxy, ManagerError> {
        Ok(RLockProxy::from_handle(self.new_object(Kind::RLock)?))
    }

    /// A new semaphore with `value` permits.
    pub fn semaphore(&self, value: usize) -> Result<SemaphoreProxy, ManagerError> {
        Ok(SemaphoreProxy::from_handle(
            self.new_semaphore(value, false)?,
        ))
    }

    /// A new semaphore with `value` permits that cannot be released above
    /// `value`.
    pub fn bounded_semaphore(&self, value: usize) -> Result<BoundedSemaphoreProxy, ManagerError> {
        Ok(BoundedSemaphoreProxy::from_handle(
            self.new_semaphore(value, true)?,
        ))
    }

    /// A new condition variable (with its own re-entrant lock).
    pub fn condition(&self) -> Result<ConditionProxy, ManagerError> {
        Ok(ConditionProxy::from_handle(
            self.new_object(Kind::Condition)?,
        ))
    }

    /// A new event.
    pub fn event(&self) -> Result<EventProxy, ManagerError> {
        Ok(EventProxy::from_handle(self.new_object(Kind::Event)?))
    }

    /// A new barrier for `parties` callers.
    pub fn barrier(&self, parties: usize) -> Result<BarrierProxy, ManagerError> {
        Ok(BarrierProxy::from_handle(self.new_object(
            Kind::Barrier {
                parties: parties as u64,
            },
        )?))
    }

    /// A new object of a type registered under `typeid`, built by its
    /// constructor from `args`.
    pub fn create<A: Serialize + ?Sized>(
        &self,
        typeid: &str,
        args: &A,
    ) -> Result<RemoteObject, ManagerError> {
        Ok(RemoteObject::from_handle(self.new_object(
            Kind::Custom {
                typeid: typeid.to_string(),
                args: enc(args)?,
            },
        )?))
    }
}
