//! Opening a Zenoh session with the cluster's security defaults, and the
//! few Zenoh calls the rest of the module makes.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zenoh::Wait;

use super::{ClusterConfig, ClusterError};

/// Room above the payload cap for Zenoh's own framing and our envelopes.
const ENVELOPE_ROOM: usize = 64 << 10;

/// An open connection to a cluster. Cheap to clone; the session closes
/// when the last clone is dropped (its liveliness tokens vanish then).
///
/// ```no_run
/// use multiproc::cluster::ClusterConfig;
/// let session = ClusterConfig::connect("tcp/127.0.0.1:7447").open()?;
/// println!("joined as {}", session.host());
/// # Ok::<(), multiproc::cluster::ClusterError>(())
/// ```
#[derive(Clone)]
pub struct Session {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub z: zenoh::Session,
    pub namespace: String,
    pub max_payload: usize,
    pub retries: u32,
    pub orphan_timeout: Duration,
    pub host: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("namespace", &self.inner.namespace)
            .field("host", &self.inner.host)
            .finish()
    }
}

fn zerr(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Zenoh(e.to_string())
}

/// The request `query` carries, decoded (at most `limit` bytes). A query
/// whose payload does not decode is answered with an error naming `what`,
/// and `None` is returned.
pub(crate) fn decode_query<T: serde::de::DeserializeOwned>(
    query: &zenoh::query::Query,
    limit: usize,
    what: &str,
) -> Option<T> {
    let bytes = query
        .payload()
        .map(|p| p.to_bytes().into_owned())
        .unwrap_or_default();
    match crate::pool::remote::decode(&bytes, limit) {
        Ok(v) => Some(v),
        Err(e) => {
            let _ = query.reply_err(format!("bad {what}: {e:?}")).wait();
            None
        }
    }
}

/// The host part of an endpoint `proto/host:port`, when it is an IP
/// address or `localhost`.
fn is_loopback(endpoint: &str) -> bool {
    let Some((_, addr)) = endpoint.split_once('/') else {
        return false;
    };
    let addr = addr.split(['?', '#']).next().unwrap_or(addr);
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h,
        None => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// This machine's name, made safe for a key expression.
pub(crate) fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = key_safe(name.trim());
    if name.is_empty() {
        "unknown".into()
    } else {
        name
    }
}

/// `s` with the characters a key chunk cannot hold replaced by `_`.
pub(crate) fn key_safe(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '/' | '*' | '$' | '?' | '#' | ' ' => '_',
            c => c,
        })
        .collect()
}

/// A JSON string literal.
fn json(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_list(items: &[String]) -> String {
    format!(
        "[{}]",
        items.iter().map(|s| json(s)).collect::<Vec<_>>().join(",")
    )
}

/// A private file holding the listener's user/password dictionary while
/// the session opens (Zenoh reads it from a path); removed on drop.
struct Dictionary(std::path::PathBuf);

impl Dictionary {
    fn write(user: &str, password: &str) -> Result<Self, ClusterError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if user.contains([':', '\n']) || password.contains('\n') || user.is_empty() {
            return Err(ClusterError::Config(
                "a user name may not be empty or hold ':' or a newline, nor a password a newline"
                    .into(),
            ));
        }
        if password.is_empty() {
            return Err(ClusterError::Config("the password is empty".into()));
        }
        let dir = std::env::var_os("XDG_RUNTIME_DIR")
            .map(std::path::PathBuf::from)
            .filter(|d| d.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let tag = crate::sys::random::hex(8).map_err(|e| ClusterError::Config(e.to_string()))?;
        let path = dir.join(format!(".multiproc-cluster-{tag}"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| ClusterError::Config(format!("cannot write {}: {e}", path.display())))?;
        let me = Dictionary(path);
        f.write_all(format!("{user}:{password}\n").as_bytes())
            .map_err(|e| ClusterError::Config(e.to_string()))?;
        Ok(me)
    }
}

impl Drop for Dictionary {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The TLS settings of `cfg` (files that must exist), and a check that a
/// `tls/` listener has a certificate to present.
fn tls(cfg: &ClusterConfig, z: &mut zenoh::Config) -> Result<(), ClusterError> {
    let file = |p: &std::path::Path| -> Result<String, ClusterError> {
        if !p.is_file() {
            return Err(ClusterError::Config(format!(
                "TLS file {} is not readable",
                p.display()
            )));
        }
        Ok(json(&p.to_string_lossy()))
    };
    let set = |z: &mut zenoh::Config, k: &str, v: String| {
        z.insert_json5(k, &v)
            .map_err(|e| ClusterError::Config(format!("{k}: {e}")))
    };
    if let Some(ca) = &cfg.tls_ca {
        set(z, "transport/link/tls/root_ca_certificate", file(ca)?)?;
    }
    match &cfg.tls_identity {
        Some((cert, key)) => {
            set(z, "transport/link/tls/listen_certificate", file(cert)?)?;
            set(z, "transport/link/tls/listen_private_key", file(key)?)?;
        }
        None => {
            if let Some(ep) = cfg.listen.iter().find(|e| e.starts_with("tls/")) {
                return Err(ClusterError::Config(format!(
                    "listening on {ep} needs a certificate and key (tls_identity)"
                )));
            }
        }
    }
    Ok(())
}

impl Session {
    pub(crate) fn open(cfg: &ClusterConfig) -> Result<Session, ClusterError> {
        if cfg.connect.is_empty() && cfg.listen.is_empty() {
            return Err(ClusterError::Config(
                "no endpoint: connect to one, or listen on one".into(),
            ));
        }
        if cfg.namespace.is_empty() || key_safe(&cfg.namespace) != cfg.namespace {
            return Err(ClusterError::Config(format!(
                "namespace {:?} is not a plain key chunk",
                cfg.namespace
            )));
        }
        for ep in &cfg.listen {
            if cfg.credentials.is_none() && !is_loopback(ep) {
                return Err(ClusterError::Insecure(ep.clone()));
            }
        }
        let mut z = zenoh::Config::default();
        let set = |z: &mut zenoh::Config, k: &str, v: String| {
            z.insert_json5(k, &v)
                .map_err(|e| ClusterError::Config(format!("{k}: {e}")))
        };
        let mode = if cfg.listen.is_empty() {
            "client"
        } else {
            "router"
        };
        set(&mut z, "mode", json(mode))?;
        set(&mut z, "scouting/multicast/enabled", "false".into())?;
        set(&mut z, "scouting/gossip/enabled", "false".into())?;
        set(&mut z, "connect/endpoints", json_list(&cfg.connect))?;
        set(&mut z, "listen/endpoints", json_list(&cfg.listen))?;
        let timeout = cfg.connect_timeout.as_millis().min(i64::MAX as u128) as i64;
        set(&mut z, "connect/timeout_ms", timeout.to_string())?;
        set(&mut z, "connect/exit_on_failure", "true".into())?;
        set(&mut z, "adminspace/enabled", "false".into())?;
        let room = cfg.max_payload.saturating_add(ENVELOPE_ROOM);
        set(
            &mut z,
            "transport/link/rx/max_message_size",
            room.to_string(),
        )?;
        if let Some(lease) = cfg.lease {
            let ms = lease.as_millis().clamp(100, u64::MAX as u128) as u64;
            set(&mut z, "transport/link/tx/lease", ms.to_string())?;
            set(&mut z, "transport/link/tx/keep_alive", "4".into())?;
        }
        let mut dictionary = None;
        if let Some((user, password)) = &cfg.credentials {
            set(&mut z, "transport/auth/usrpwd/user", json(user))?;
            set(&mut z, "transport/auth/usrpwd/password", json(password))?;
            if !cfg.listen.is_empty() {
                let d = Dictionary::write(user, password)?;
                let path = d.0.to_string_lossy().into_owned();
                set(&mut z, "transport/auth/usrpwd/dictionary_file", json(&path))?;
                dictionary = Some(d);
            }
        }
        tls(cfg, &mut z)?;
        let opened = zenoh::open(z).wait();
        drop(dictionary);
        let z = opened.map_err(|e| ClusterError::Connect(e.to_string()))?;
        Ok(Session {
            inner: Arc::new(Inner {
                z,
                namespace: cfg.namespace.clone(),
                max_payload: cfg.max_payload,
                retries: cfg.retries,
                orphan_timeout: cfg.orphan_timeout,
                host: host_name(),
            }),
        })
    }

    /// The name of this host, as it appears in
    /// [`TaskError::HostLost`](crate::TaskError).
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// The Zenoh session underneath, for what this module does not wrap
    /// (a queryable or subscriber of the program's own beside a pool).
    /// Keys under the cluster's namespace (`multiproc/` by default) are
    /// the crate's.
    pub fn zenoh(&self) -> &zenoh::Session {
        &self.inner.z
    }

    /// The payload cap of this session.
    pub fn max_payload(&self) -> usize {
        self.inner.max_payload
    }

    /// `namespace/rest`.
    pub(crate) fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.inner.namespace)
    }

    pub(crate) fn z(&self) -> &zenoh::Session {
        &self.inner.z
    }

    /// Asks `key` with `payload` and waits up to `timeout` for the one
    /// reply. `Ok(None)`: nobody answered (no queryable, or timed out).
    #[cfg(test)]
    pub(crate) fn ask(
        &self,
        key: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Option<Vec<u8>>, ClusterError> {
        let replies = self
            .inner
            .z
            .get(key)
            .payload(payload)
            .timeout(timeout)
            .wait()
            .map_err(zerr)?;
        Pending::new(replies, timeout).wait()
    }

    /// A querier of `key`: queries it again and again with a timeout of
    /// `timeout`, without resolving the key each time.
    pub(crate) fn querier(
        &self,
        key: String,
        timeout: Duration,
    ) -> Result<zenoh::query::Querier<'static>, ClusterError> {
        self.inner
            .z
            .declare_querier(key)
            .timeout(timeout)
            .wait()
            .map_err(zerr)
    }

    /// Whether a liveliness token matching `key` is alive now.
    pub(crate) fn alive(&self, key: &str, timeout: Duration) -> Result<bool, ClusterError> {
        let replies = self
            .inner
            .z
            .liveliness()
            .get(key)
            .timeout(timeout)
            .wait()
            .map_err(zerr)?;
        let deadline = Instant::now() + timeout + Duration::from_millis(500);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match replies.recv_timeout(left) {
                Ok(Some(reply)) => {
                    if reply.result().is_ok() {
                        return Ok(true);
                    }
                }
                Ok(None) | Err(_) => return Ok(false),
            }
        }
    }
}

/// A query on its way: its one reply, when it comes.
pub(crate) struct Pending {
    replies: zenoh::handlers::FifoChannelHandler<zenoh::query::Reply>,
    deadline: Instant,
}

impl Pending {
    /// The reply to a query sent with `timeout`.
    pub(crate) fn new(
        replies: zenoh::handlers::FifoChannelHandler<zenoh::query::Reply>,
        timeout: Duration,
    ) -> Pending {
        Pending {
            replies,
            deadline: Instant::now() + timeout + Duration::from_millis(500),
        }
    }

    fn take(reply: zenoh::query::Reply) -> Result<Option<Vec<u8>>, ClusterError> {
        match reply.into_result() {
            Ok(sample) => Ok(Some(sample.payload().to_bytes().into_owned())),
            Err(e) => Err(ClusterError::Zenoh(
                String::from_utf8_lossy(&e.payload().to_bytes()).into_owned(),
            )),
        }
    }

    /// Waits for the reply. `Ok(None)`: nobody answered (no queryable,
    /// or timed out).
    pub(crate) fn wait(self) -> Result<Option<Vec<u8>>, ClusterError> {
        match self.replies.recv_deadline(self.deadline) {
            Ok(Some(reply)) => Self::take(reply),
            // Timed out, or every reply is in (the channel closed).
            Ok(None) | Err(_) => Ok(None),
        }
    }

    /// The reply if it is in: `None` while it may still come,
    /// `Some(Ok(None))` when nobody answered.
    pub(crate) fn poll(&self) -> Option<Result<Option<Vec<u8>>, ClusterError>> {
        match self.replies.try_recv() {
            Ok(Some(reply)) => Some(Self::take(reply)),
            Ok(None) if Instant::now() < self.deadline => None,
            Ok(None) | Err(_) => Some(Ok(None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_endpoints() {
        assert!(is_loopback("tcp/127.0.0.1:7447"));
        assert!(is_loopback("tcp/localhost:7447"));
        assert!(is_loopback("tcp/[::1]:7447"));
        assert!(!is_loopback("tcp/0.0.0.0:7447"));
        assert!(!is_loopback("tcp/10.1.2.3:7447"));
        assert!(!is_loopback("tcp/example.org:7447"));
    }

    #[test]
    fn listening_outside_loopback_needs_credentials() {
        let e = ClusterConfig::listen("tcp/0.0.0.0:0").open().unwrap_err();
        assert!(matches!(e, ClusterError::Insecure(_)), "{e}");
    }
}
