//! Compile-time checks of the traits the public types carry: `Debug` on
//! every handle, `Send` and `Sync` where a value may cross or be shared
//! between threads. A regression here is a build error of this file.

use std::fmt::Debug;

use multiproc::csp::{
    Alternation, Channel, ChannelBuilder, ChannelError, CspProcess, Fair, Outcome, ProcessError,
    Reader, Spawned, Writer,
};
use multiproc::*;

fn debug<T: Debug>() {}
fn send<T: Send>() {}
fn sync<T: Sync>() {}

fn debug_send_sync<T: Debug + Send + Sync>() {}

#[test]
fn process_and_manager_are_send_and_sync() {
    debug_send_sync::<Process<u32>>();
    debug_send_sync::<Manager>();
    debug_send_sync::<JoinHandle<u32>>();
    debug_send_sync::<Builder>();
    debug_send_sync::<Pool>();
    // The initializer's arguments need only be `Send`.
    debug::<PoolBuilder>();
    send::<PoolBuilder>();
}

#[test]
fn queues_pipes_and_shared_memory_are_send_and_sync() {
    debug_send_sync::<Queue<String>>();
    debug_send_sync::<JoinableQueue<String>>();
    debug_send_sync::<SimpleQueue<String>>();
    debug_send_sync::<QueueBuilder>();
    debug_send_sync::<Connection>();
    debug_send_sync::<Listener>();
    debug_send_sync::<ListenerBuilder>();
    debug_send_sync::<Address>();
    debug_send_sync::<Value<u64>>();
    debug_send_sync::<Array<u64>>();
    debug_send_sync::<RawValue<u64>>();
    debug_send_sync::<RawArray<u64>>();
    debug_send_sync::<SharedMemory>();
    debug_send_sync::<ShareableList>();
}

#[test]
fn sync_primitives_are_send_and_sync() {
    debug_send_sync::<Lock>();
    debug_send_sync::<RLock>();
    debug_send_sync::<Semaphore>();
    debug_send_sync::<BoundedSemaphore>();
    debug_send_sync::<Event>();
    debug_send_sync::<Condition>();
    debug_send_sync::<Barrier>();
}

#[test]
fn proxies_are_send_and_sync() {
    debug_send_sync::<ListProxy<u32>>();
    debug_send_sync::<DictProxy<String, u32>>();
    debug_send_sync::<Namespace>();
    debug_send_sync::<ValueProxy<u32>>();
    debug_send_sync::<ArrayProxy<u32>>();
    debug_send_sync::<QueueProxy<u32>>();
    debug_send_sync::<JoinableQueueProxy<u32>>();
    debug_send_sync::<LockProxy>();
    debug_send_sync::<RLockProxy>();
    debug_send_sync::<SemaphoreProxy>();
    debug_send_sync::<BoundedSemaphoreProxy>();
    debug_send_sync::<EventProxy>();
    debug_send_sync::<ConditionProxy>();
    debug_send_sync::<BarrierProxy>();
}

#[test]
fn pool_results_are_debug_and_send() {
    debug_send_sync::<MapResult<u32>>();
    debug_send_sync::<AsyncResult<u32>>();
    debug::<Imap<u32>>();
    send::<Imap<u32>>();
}

#[test]
fn csp_types_are_debug_and_send() {
    debug_send_sync::<Channel<u32>>();
    debug_send_sync::<ChannelBuilder>();
    debug_send_sync::<Reader<u32>>();
    debug_send_sync::<Writer<u32>>();
    debug_send_sync::<Fair>();
    debug_send_sync::<Outcome<u32>>();
    debug::<CspProcess<u32>>();
    send::<CspProcess<u32>>();
    debug::<Spawned<u32>>();
    send::<Spawned<u32>>();
    debug::<Alternation<'static, u32>>();
}

#[test]
fn errors_are_debug_send_sync_and_std_errors() {
    fn error<T: std::error::Error + Send + Sync + 'static>() {}
    error::<CodecError>();
    error::<SendError>();
    error::<RecvError>();
    error::<StartError>();
    error::<JoinError>();
    error::<ConnectError>();
    error::<ManagerError>();
    error::<PoolError>();
    error::<TaskError>();
    error::<GetError>();
    error::<TryGetError>();
    error::<GetTimeoutError>();
    error::<PutError<u32>>();
    error::<ShmError>();
    error::<ShareableListError>();
    error::<BarrierError>();
    error::<ReleaseError>();
    error::<ChannelError>();
    error::<ProcessError>();
    error::<JoinTimeoutError<u32>>();
    sync::<LockError<()>>();
}
