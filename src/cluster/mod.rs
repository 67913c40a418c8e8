//! Beyond one machine: a [`Pool`](crate::Pool) and CSP channels across
//! hosts, on [Zenoh](https://zenoh.io) (cargo feature `zenoh`).
//!
//! A *cluster* is a set of processes that reach each other through Zenoh
//! endpoints given explicitly (`tcp/host:port`): one process listens (an
//! embedded Zenoh router, or a `zenohd` started by hand), the others
//! connect. Nothing is discovered by multicast.
//!
//! * [`Pool::cluster`](crate::Pool::cluster) makes a [`ClusterPool`]: the
//!   local pool's `map`, `imap`, `imap_unordered`, `starmap` and
//!   `apply_async`, run by worker processes on any host of the cluster.
//! * Workers are the program's own executable started in worker mode:
//!   with `MULTIPROC_CLUSTER_WORKER=1` in its environment it serves the
//!   cluster named by `MULTIPROC_CLUSTER` before `main` runs (as a spawned
//!   child does), or `main` calls [`serve`] itself.
//! * [`NetChannel`] is a named CSP channel whose *home* (the process that
//!   made it) arbitrates every read and write: rendezvous semantics across
//!   hosts, poison and retire kept at the home, a lost home a typed
//!   [`ChannelError::Lost`](crate::csp::ChannelError) rather than a hang.
//!
//! ```no_run
//! use multiproc::Pool;
//! use multiproc::cluster::ClusterConfig;
//!
//! fn square(x: u64) -> u64 { x * x }
//!
//! // The driver embeds a router; workers on other hosts run this same
//! // executable with MULTIPROC_CLUSTER_WORKER=1 MULTIPROC_CLUSTER=tcp/<driver>:7447
//! // (and the credentials in MULTIPROC_CLUSTER_USER / _PASSWORD).
//! let config = ClusterConfig::listen("tcp/0.0.0.0:7447").credentials("me", "secret");
//! let pool = Pool::cluster(config)?;
//! assert_eq!(pool.map(square, 0..5u64)?, vec![0, 1, 4, 9, 16]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Security defaults
//!
//! * No multicast scouting: sessions reach exactly the endpoints given.
//! * Listening on an address other than loopback needs credentials
//!   (Zenoh's user/password authentication): without them
//!   [`ClusterConfig::open`] fails with [`ClusterError::Insecure`]. A
//!   session without the right credentials is refused by the listener.
//! * TLS: an endpoint `tls/host:port` instead of `tcp/host:port` encrypts
//!   the link (Zenoh's TLS transport, rustls). The listener presents a
//!   certificate ([`ClusterConfig::tls_identity`]); connecting sessions
//!   check it against their certificate authority
//!   ([`ClusterConfig::tls_ca`]) and the endpoint's host name, and refuse
//!   it otherwise. A listener on `tls/` takes no plain TCP session.
//!   Credentials are still required beyond loopback, over TLS too.
//! * Every payload is capped ([`ClusterConfig::max_payload`], 16 MiB by
//!   default): a larger task argument or result is that task's
//!   [`TaskError::TooLarge`](crate::TaskError), a larger channel message
//!   [`ChannelError::TooLarge`](crate::csp::ChannelError); Zenoh's own
//!   receive limit is set just above the cap.
//! * Task payloads are typed values (serde, the crate's codec), never code. A task
//!   names its function as the local pool does (by its distance from a
//!   fixed function of the executable), and a worker refuses a task from a
//!   different build of the program. Whoever holds the cluster's
//!   credentials can ask workers to run any function of that program with
//!   arguments of its choosing: treat the credentials as such.
//!
//! # At a hundred hosts
//!
//! Nothing here assumes one router: workers connect (client mode) to the
//! router nearest them, routers connect to each other, and the driver to
//! one or two of them ([`ClusterConfig::and_connect`]). The key space keeps
//! each pool and channel to itself: a pull goes to `ns/pool/<id>/work`,
//! one queryable in the whole cluster, so routers forward it without
//! fan-out; workers' tokens live under `ns/worker/*`, which each driver
//! watches; channels under `ns/chan/<name>/*`. Every pull of a pool goes
//! to its one driver, which answers one query per pull: with short tasks
//! it is the limit long before the routers are, and larger chunks
//! (`map_chunked`, `imap_chunked`) or a larger prefetch
//! ([`WorkerOptions::prefetch`], tasks per pull) are the remedy; several
//! pools (drivers) share one set of workers. Liveliness tokens cost each
//! router a table entry per worker.
//!
//! # The driver's death
//!
//! The driver holds its pool's task table, as CPython's and Ray's pools
//! do: when its process ends, the pool ends with it (its callers were in
//! that process). Workers drop the tasks they held for it and serve other
//! pools. There is no durable queue that outlives the driver.

pub(crate) mod alt;
mod channel;
mod driver;
mod handle;
mod net;
mod pool;
pub(crate) mod wire;
mod worker;

use std::time::Duration;

use crate::macros::setters;

pub use crate::error::ClusterError;
pub use channel::{NetChannel, NetReader, NetWriter};
pub use handle::{ClusterAsyncResult, ClusterImap, ClusterMapResult};
pub use net::Session;
pub use pool::ClusterPool;
pub use worker::{
    DEFAULT_GIVE_BACK, DEFAULT_PREFETCH, ENV_GIVE_BACK_MS, ENV_IDLE_EXIT_MS, ENV_PREFETCH,
    WorkerOptions, serve, serve_if_worker,
};

/// Environment variable naming the endpoint to connect to
/// (`tcp/host:port`), read by [`ClusterConfig::from_env`].
pub const ENV_ENDPOINT: &str = "MULTIPROC_CLUSTER";
/// Environment variable holding the user name (with [`ENV_PASSWORD`]).
pub const ENV_USER: &str = "MULTIPROC_CLUSTER_USER";
/// Environment variable holding the password (with [`ENV_USER`]).
pub const ENV_PASSWORD: &str = "MULTIPROC_CLUSTER_PASSWORD";
/// Environment variable setting the session lease in milliseconds (how
/// soon a silent host counts as lost; Zenoh's default is 10 s).
pub const ENV_LEASE_MS: &str = "MULTIPROC_CLUSTER_LEASE_MS";
/// Environment variable naming the PEM file of the certificate authority
/// that signed the routers' TLS certificates (see
/// [`ClusterConfig::tls_ca`]).
pub const ENV_TLS_CA: &str = "MULTIPROC_CLUSTER_TLS_CA";
/// Environment variable naming this process's TLS certificate (PEM), for
/// a process that listens on a `tls/` endpoint (with [`ENV_TLS_KEY`]).
pub const ENV_TLS_CERT: &str = "MULTIPROC_CLUSTER_TLS_CERT";
/// Environment variable naming the private key (PEM) of [`ENV_TLS_CERT`].
pub const ENV_TLS_KEY: &str = "MULTIPROC_CLUSTER_TLS_KEY";
/// Environment variable that, set to `1`, makes the program a worker:
/// before `main` runs it serves the cluster of [`ClusterConfig::from_env`]
/// and exits.
pub const ENV_WORKER: &str = "MULTIPROC_CLUSTER_WORKER";

/// Default payload cap: 16 MiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 16 << 20;

/// How to join a cluster: endpoints, credentials, lease and payload cap.
///
/// ```
/// use std::time::Duration;
/// use multiproc::cluster::ClusterConfig;
///
/// let c = ClusterConfig::connect("tcp/10.0.0.5:7447")
///     .credentials("worker", "s3cret")
///     .lease(Duration::from_secs(2))
///     .max_payload(1 << 20);
/// assert_eq!(c.max_payload_bytes(), 1 << 20);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    connect: Vec<String>,
    listen: Vec<String>,
    credentials: Option<(String, String)>,
    lease: Option<Duration>,
    max_payload: usize,
    namespace: String,
    retries: u32,
    connect_timeout: Duration,
    orphan_timeout: Duration,
    tls_ca: Option<std::path::PathBuf>,
    tls_identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("connect", &self.connect)
            .field("listen", &self.listen)
            .field("user", &self.credentials.as_ref().map(|c| &c.0))
            .field("lease", &self.lease)
            .field("max_payload", &self.max_payload)
            .field("namespace", &self.namespace)
            .field("retries", &self.retries)
            .field("tls_ca", &self.tls_ca)
            .field("tls_identity", &self.tls_identity)
            .finish()
    }
}

/// The environment variables `a` and `b`, both set or neither.
fn env_pair(a: &str, b: &str) -> Result<Option<(String, String)>, ClusterError> {
    match (std::env::var(a), std::env::var(b)) {
        (Ok(x), Ok(y)) => Ok(Some((x, y))),
        (Err(_), Err(_)) => Ok(None),
        _ => Err(ClusterError::Config(format!(
            "set both {a} and {b}, or neither"
        ))),
    }
}

impl ClusterConfig {
    fn empty() -> Self {
        ClusterConfig {
            connect: Vec::new(),
            listen: Vec::new(),
            credentials: None,
            lease: None,
            max_payload: DEFAULT_MAX_PAYLOAD,
            namespace: "multiproc".into(),
            retries: 0,
            connect_timeout: Duration::from_secs(10),
            orphan_timeout: Duration::from_secs(30),
            tls_ca: None,
            tls_identity: None,
        }
    }

    /// Joins the cluster by connecting to `endpoint` (a Zenoh router,
    /// `tcp/host:port`).
    pub fn connect(endpoint: impl Into<String>) -> Self {
        let mut c = Self::empty();
        c.connect.push(endpoint.into());
        c
    }

    /// Runs a Zenoh router inside this process, listening on `endpoint`;
    /// other processes [`connect`](Self::connect) to it. A non-loopback
    /// address needs [`credentials`](Self::credentials).
    pub fn listen(endpoint: impl Into<String>) -> Self {
        let mut c = Self::empty();
        c.listen.push(endpoint.into());
        c
    }

    /// The configuration in the environment: [`ENV_ENDPOINT`] (connect),
    /// [`ENV_USER`] and [`ENV_PASSWORD`], [`ENV_LEASE_MS`], and
    /// [`ENV_TLS_CA`] (with [`ENV_TLS_CERT`] and [`ENV_TLS_KEY`], both or
    /// neither).
    pub fn from_env() -> Result<Self, ClusterError> {
        let endpoint = std::env::var(ENV_ENDPOINT)
            .map_err(|_| ClusterError::Config(format!("{ENV_ENDPOINT} is not set")))?;
        let mut c = Self::connect(endpoint);
        if let Some((u, p)) = env_pair(ENV_USER, ENV_PASSWORD)? {
            c = c.credentials(u, p);
        }
        if let Ok(ms) = std::env::var(ENV_LEASE_MS) {
            let ms: u64 = ms.parse().map_err(|_| {
                ClusterError::Config(format!("{ENV_LEASE_MS}={ms:?} is not a number"))
            })?;
            c = c.lease(Duration::from_millis(ms));
        }
        if let Ok(ca) = std::env::var(ENV_TLS_CA) {
            c = c.tls_ca(ca);
        }
        if let Some((cert, key)) = env_pair(ENV_TLS_CERT, ENV_TLS_KEY)? {
            c = c.tls_identity(cert, key);
        }
        Ok(c)
    }

    /// Also connect to `endpoint` (another router, for redundancy).
    pub fn and_connect(mut self, endpoint: impl Into<String>) -> Self {
        self.connect.push(endpoint.into());
        self
    }

    /// User and password: a listener accepts only sessions presenting
    /// them; a connecting session presents them.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// The certificate authority (a PEM file) that signed the certificate
    /// of the routers this process connects to on `tls/host:port`
    /// endpoints; their certificate must also name the host of the
    /// endpoint. Without it, the system's public authorities are trusted.
    ///
    /// ```
    /// use multiproc::cluster::ClusterConfig;
    /// let c = ClusterConfig::connect("tls/cluster.example.org:7447")
    ///     .credentials("worker", "s3cret")
    ///     .tls_ca("/etc/multiproc/ca.pem");
    /// # let _ = c;
    /// ```
    pub fn tls_ca(mut self, pem: impl Into<std::path::PathBuf>) -> Self {
        self.tls_ca = Some(pem.into());
        self
    }

    /// This process's certificate and private key (PEM files), which a
    /// listener on a `tls/host:port` endpoint presents to the sessions
    /// that connect to it.
    ///
    /// ```
    /// use multiproc::cluster::ClusterConfig;
    /// let c = ClusterConfig::listen("tls/0.0.0.0:7447")
    ///     .credentials("me", "s3cret")
    ///     .tls_identity("/etc/multiproc/router.pem", "/etc/multiproc/router.key");
    /// # let _ = c;
    /// ```
    pub fn tls_identity(
        mut self,
        certificate: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.tls_identity = Some((certificate.into(), key.into()));
        self
    }

    setters! {
        /// How long a silent session stays alive (Zenoh's link lease; default
        /// 10 s). A worker or channel home whose host goes silent is declared
        /// lost after about this long.
        lease(lease: Duration) => lease = Some(lease);

        /// The largest payload (encoded task arguments, result or channel
        /// message) sent or accepted; default [`DEFAULT_MAX_PAYLOAD`].
        max_payload(bytes: usize) => max_payload = bytes.max(1024);
    }

    /// The payload cap in force.
    pub fn max_payload_bytes(&self) -> usize {
        self.max_payload
    }

    setters! {
        /// The key prefix every name of this cluster lives under (default
        /// `multiproc`); clusters sharing routers but not work use different
        /// ones.
        namespace(prefix: impl Into<String>) => namespace = prefix.into();

        /// How many times a task whose worker was lost while running it is
        /// run again before it fails with
        /// [`TaskError::HostLost`](crate::TaskError) (default 0). Tasks still
        /// queued are never charged.
        task_retries(n: u32) => retries = n;

        /// When every worker a pool had is lost and none joins within
        /// `timeout` (default 30 s), its queued tasks fail with
        /// [`TaskError::Broken`](crate::TaskError) instead of waiting for
        /// ever. Tasks submitted before any worker ever joined wait.
        orphan_timeout(timeout: Duration) => orphan_timeout = timeout;

        /// How long opening a session keeps trying to reach its endpoints
        /// (default 10 s).
        connect_timeout(timeout: Duration) => connect_timeout = timeout;
    }

    /// Opens a session on this configuration.
    pub fn open(&self) -> Result<Session, ClusterError> {
        Session::open(self)
    }
}

impl From<&str> for ClusterConfig {
    /// An endpoint to connect to.
    fn from(endpoint: &str) -> Self {
        ClusterConfig::connect(endpoint)
    }
}

impl From<String> for ClusterConfig {
    /// An endpoint to connect to.
    fn from(endpoint: String) -> Self {
        ClusterConfig::connect(endpoint)
    }
}
