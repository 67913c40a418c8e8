//! The authkey handshake of [`Listener`](super::Listener) and
//! [`Client`](super::Client), message for message the one of Python 3.12's
//! `multiprocessing.connection` (`deliver_challenge` / `answer_challenge`),
//! over the crate's ordinary frames:
//!
//! ```text
//!   challenger                               answerer
//!   "#CHALLENGE#{sha256}" + 40 random bytes  ->
//!                                          <-  "{sha256}" + HMAC-SHA256(key, "{sha256}" + random)
//!   "#WELCOME#" or "#FAILURE#"               ->
//! ```
//!
//! The listener challenges first, then the roles swap, so each side proves
//! it holds the key. Every handshake frame is capped at 256 bytes and the
//! whole exchange runs against one deadline.
//!
//! Python 3.11 and older speak the legacy form: a challenge of 20 random
//! bytes with no `{digest}` prefix, answered by a bare 16-byte HMAC-MD5.
//! Like Python 3.12 this side
//!
//! - always challenges in the modern form (`{sha256}` + 40 bytes): a legacy
//!   peer takes the whole message as its challenge and answers a bare
//!   HMAC-MD5 of it, which is accepted, as is a prefixed answer in md5,
//!   sha256 or sha384 (the peer picks; the MAC covers the prefix we sent,
//!   so the choice cannot be forged in transit);
//! - answers in the form it is challenged with: a bare HMAC-MD5 to a
//!   legacy 20-byte challenge, the named digest to a prefixed one.
//!
//! Digests Python knows but this side lacks (`sha3_256`, `sha3_384`) are
//! refused with [`ConnectError::Auth`].

use std::io;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;
use sha2::{Sha256, Sha384};

use super::Connection;
use crate::error::{ConnectError, RecvError, SendError};
use crate::sys;
use crate::wait::Deadline;

/// Opens a challenge.
const CHALLENGE: &[u8] = b"#CHALLENGE#";
/// Accepts a response.
const WELCOME: &[u8] = b"#WELCOME#";
/// Rejects a response.
const FAILURE: &[u8] = b"#FAILURE#";
/// Random bytes in a challenge.
const MESSAGE_LENGTH: usize = 40;
/// The digest this side challenges with, as named in the messages.
const DIGEST_PREFIX: &[u8] = b"{sha256}";
/// Largest handshake frame accepted.
pub(super) const MAX_MESSAGE: usize = 256;
/// Legacy (MD5-only) challenges and responses have these lengths.
const LEGACY_LENGTHS: [usize; 2] = [20, 16];
/// Longest digest name Python accepts (`sha3_384`).
const MAX_DIGEST_NAME: usize = 8;
/// Digests Python 3.12 may propose; the sha3 ones are refused here.
const KNOWN_DIGESTS: [&[u8]; 5] = [b"md5", b"sha256", b"sha384", b"sha3_256", b"sha3_384"];

/// A digest spoken in the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Digest {
    Md5,
    Sha256,
    Sha384,
}

/// How a challenge or a response names its digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// No prefix: HMAC-MD5, Python 3.11 and older.
    Legacy,
    /// A `{name}` prefix.
    Prefixed(Digest),
}

impl Form {
    fn digest(self) -> Digest {
        match self {
            Form::Legacy => Digest::Md5,
            Form::Prefixed(d) => d,
        }
    }
}

impl Digest {
    fn name(self) -> &'static str {
        match self {
            Digest::Md5 => "md5",
            Digest::Sha256 => "sha256",
            Digest::Sha384 => "sha384",
        }
    }

    /// HMAC of `message` keyed with `key`.
    fn tag(self, key: &[u8], message: &[u8]) -> Result<Vec<u8>, ConnectError> {
        fn with<M: Mac + KeyInit>(key: &[u8], message: &[u8]) -> Result<Vec<u8>, ConnectError> {
            let mac = <M as KeyInit>::new_from_slice(key)
                .map_err(|_| auth("the authkey is unusable".into()))?;
            Ok(mac.chain_update(message).finalize().into_bytes().to_vec())
        }
        match self {
            Digest::Md5 => with::<Hmac<Md5>>(key, message),
            Digest::Sha256 => with::<Hmac<Sha256>>(key, message),
            Digest::Sha384 => with::<Hmac<Sha384>>(key, message),
        }
    }

    /// Whether `got` is the HMAC of `message`, compared in constant time.
    fn verify(self, key: &[u8], message: &[u8], got: &[u8]) -> Result<bool, ConnectError> {
        fn with<M: Mac + KeyInit>(
            key: &[u8],
            message: &[u8],
            got: &[u8],
        ) -> Result<bool, ConnectError> {
            let mac = <M as KeyInit>::new_from_slice(key)
                .map_err(|_| auth("the authkey is unusable".into()))?;
            // `verify_slice` compares in constant time.
            Ok(mac.chain_update(message).verify_slice(got).is_ok())
        }
        match self {
            Digest::Md5 => with::<Hmac<Md5>>(key, message, got),
            Digest::Sha256 => with::<Hmac<Sha256>>(key, message, got),
            Digest::Sha384 => with::<Hmac<Sha384>>(key, message, got),
        }
    }

    fn mac_length(self) -> usize {
        match self {
            Digest::Md5 => 16,
            Digest::Sha256 => 32,
            Digest::Sha384 => 48,
        }
    }
}

/// Whether `frame` is a listener's challenge: what a client that holds no
/// authkey receives first from a listener that requires one.
pub(crate) fn is_challenge(frame: &[u8]) -> bool {
    frame.starts_with(CHALLENGE)
}

/// Which end of a connection runs the handshake: the listener challenges
/// first, the client answers first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Listener,
    Client,
}

/// The whole handshake from `side`'s end, each message capped at
/// [`MAX_MESSAGE`] and all of them within `timeout`.
pub(crate) fn handshake(
    conn: &mut Connection,
    key: &[u8],
    timeout: Option<Duration>,
    side: Side,
) -> Result<(), ConnectError> {
    let deadline = Deadline::from_timeout(timeout).instant();
    let cap = conn.max_frame();
    conn.set_max_frame(MAX_MESSAGE);
    let res = match side {
        Side::Listener => deliver_challenge(conn, key, deadline)
            .and_then(|()| answer_challenge(conn, key, deadline)),
        Side::Client => answer_challenge(conn, key, deadline)
            .and_then(|()| deliver_challenge(conn, key, deadline)),
    };
    conn.set_max_frame(cap);
    res
}

fn deliver_challenge(
    conn: &Connection,
    key: &[u8],
    deadline: Option<Instant>,
) -> Result<(), ConnectError> {
    let message = new_challenge()?;
    send_challenge(conn, &message)?;
    let response = recv(conn, deadline)?;
    judge_response(conn, key, &message, &response)
}

fn answer_challenge(
    conn: &Connection,
    key: &[u8],
    deadline: Option<Instant>,
) -> Result<(), ConnectError> {
    let frame = recv(conn, deadline)?;
    answer(conn, key, &frame)?;
    judge_verdict(&recv(conn, deadline)?)
}

/// A challenge as sent: the digest prefix and the random bytes.
pub(super) type Challenge = [u8; DIGEST_PREFIX.len() + MESSAGE_LENGTH];

/// A fresh challenge, to send and later give to [`judge_response`]; an
/// error if the OS random source fails (nothing predictable is sent).
pub(super) fn new_challenge() -> Result<Challenge, ConnectError> {
    let mut message = [0u8; DIGEST_PREFIX.len() + MESSAGE_LENGTH];
    message[..DIGEST_PREFIX.len()].copy_from_slice(DIGEST_PREFIX);
    sys::random::fill(&mut message[DIGEST_PREFIX.len()..])?;
    Ok(message)
}

/// Sends the challenge `message` (from [`new_challenge`]).
pub(super) fn send_challenge(conn: &Connection, message: &Challenge) -> Result<(), ConnectError> {
    let mut frame = Vec::with_capacity(CHALLENGE.len() + message.len());
    frame.extend_from_slice(CHALLENGE);
    frame.extend_from_slice(message);
    send(conn, &frame)
}

/// Checks the peer's `response` to our challenge `message` and sends the
/// verdict.
pub(super) fn judge_response(
    conn: &Connection,
    key: &[u8],
    message: &Challenge,
    response: &[u8],
) -> Result<(), ConnectError> {
    match verify(key, message, response) {
        Ok(()) => send(conn, WELCOME),
        Err(e) => {
            // The peer may already be gone; the verdict is ours either way.
            let _ = conn.send_bytes(FAILURE);
            Err(e)
        }
    }
}

/// Answers the peer's challenge `frame`.
pub(super) fn answer(conn: &Connection, key: &[u8], frame: &[u8]) -> Result<(), ConnectError> {
    let Some(message) = frame.strip_prefix(CHALLENGE) else {
        return Err(auth(format!("expected a challenge, got {}", shown(frame))));
    };
    if message.len() < LEGACY_LENGTHS[0] {
        return Err(auth(format!(
            "challenge too short: {} bytes",
            message.len()
        )));
    }
    let response = respond(key, message)?;
    send(conn, &response)
}

/// Reads the peer's verdict on our answer.
pub(super) fn judge_verdict(verdict: &[u8]) -> Result<(), ConnectError> {
    if verdict == WELCOME {
        Ok(())
    } else if verdict == FAILURE {
        Err(auth(
            "the peer rejected our digest (different authkey)".into(),
        ))
    } else {
        Err(auth(format!("expected a verdict, got {}", shown(verdict))))
    }
}

/// Our response to the challenge `message`, in the form it was asked in:
/// a bare HMAC-MD5 to a legacy challenge, `{name}` + HMAC otherwise. The
/// MAC covers the whole message, prefix included.
fn respond(key: &[u8], message: &[u8]) -> Result<Vec<u8>, ConnectError> {
    let (form, _) = digest_payload(message)?;
    let tag = form.digest().tag(key, message)?;
    Ok(match form {
        Form::Legacy => tag,
        Form::Prefixed(d) => [format!("{{{}}}", d.name()).as_bytes(), &tag].concat(),
    })
}

/// Checks `response` against the challenge `message` we sent. The peer
/// picks the digest (a bare response is HMAC-MD5).
fn verify(key: &[u8], message: &[u8], response: &[u8]) -> Result<(), ConnectError> {
    let (form, got) = digest_payload(response)?;
    let digest = form.digest();
    if got.len() != digest.mac_length() {
        return Err(auth(format!(
            "expected a {} digest of {} bytes, got {}",
            digest.name(),
            digest.mac_length(),
            got.len()
        )));
    }
    if digest.verify(key, message, got)? {
        Ok(())
    } else {
        Err(auth(
            "the peer's digest is wrong (different authkey)".into(),
        ))
    }
}

/// Splits a challenge or response into its form and payload, as Python
/// 3.12's `_get_digest_name_and_payload`: a message of a legacy length
/// (20 or 16 bytes) is unprefixed HMAC-MD5, anything else must open with
/// `{md5}`, `{sha256}` or `{sha384}`; other digests are refused.
fn digest_payload(message: &[u8]) -> Result<(Form, &[u8]), ConnectError> {
    if LEGACY_LENGTHS.contains(&message.len()) {
        return Ok((Form::Legacy, message));
    }
    let name = match message.split_first() {
        Some((b'{', rest)) => rest
            .iter()
            .take(MAX_DIGEST_NAME + 1)
            .position(|&b| b == b'}')
            .map(|end| &rest[..end]),
        _ => None,
    };
    let digest = match name {
        Some(b"md5") => Digest::Md5,
        Some(b"sha256") => Digest::Sha256,
        Some(b"sha384") => Digest::Sha384,
        Some(name) if KNOWN_DIGESTS.contains(&name) => {
            return Err(auth(format!(
                "the peer asks for digest {}; only md5, sha256 and sha384 are supported",
                name.escape_ascii()
            )));
        }
        _ => {
            return Err(auth(format!(
                "missing or unknown digest prefix in {}",
                shown(message)
            )));
        }
    };
    Ok((Form::Prefixed(digest), &message[digest.name().len() + 2..]))
}

fn auth(why: String) -> ConnectError {
    ConnectError::Auth(why)
}

/// The first bytes of an unexpected message, escaped, for error texts.
fn shown(bytes: &[u8]) -> String {
    const SHOWN: usize = 24;
    let head = &bytes[..bytes.len().min(SHOWN)];
    let more = if bytes.len() > SHOWN { "…" } else { "" };
    format!("{} bytes \"{}{more}\"", bytes.len(), head.escape_ascii())
}

fn send(conn: &Connection, data: &[u8]) -> Result<(), ConnectError> {
    conn.send_bytes(data).map_err(|e| match e {
        SendError::Disconnected => ConnectError::Handshake(RecvError::Disconnected),
        SendError::Io(e) => ConnectError::Io(e),
        other => ConnectError::Io(io::Error::other(other)),
    })
}

fn recv(conn: &Connection, deadline: Option<Instant>) -> Result<Vec<u8>, ConnectError> {
    let res = match deadline {
        None => conn.recv_bytes(),
        Some(d) => conn.recv_bytes_timeout(d.saturating_duration_since(Instant::now())),
    };
    res.map_err(|e| match e {
        RecvError::Timeout => ConnectError::HandshakeTimeout,
        RecvError::Io(e) => ConnectError::Io(e),
        other => ConnectError::Handshake(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn digest_prefix_parsing() {
        let msg = [b"{sha256}".as_slice(), &[7u8; 40]].concat();
        assert_eq!(
            digest_payload(&msg).unwrap(),
            (Form::Prefixed(Digest::Sha256), [7u8; 40].as_slice())
        );
        let md5 = [b"{md5}".as_slice(), &[7u8; 16]].concat();
        assert_eq!(digest_payload(&md5).unwrap().0, Form::Prefixed(Digest::Md5));
        for legacy in [vec![0u8; 20], vec![0u8; 16]] {
            assert_eq!(
                digest_payload(&legacy).unwrap(),
                (Form::Legacy, legacy.as_slice())
            );
        }
        for bad in [
            [b"{sha3_256}".as_slice(), &[0u8; 40]].concat(),
            [b"{sha256".as_slice(), &[0u8; 40]].concat(),
            vec![0u8; 21],
            b"{}".to_vec(),
            b"{verylongdigestname}xxxxxxxxxxxxxxxxxxxxxxx".to_vec(),
            Vec::new(),
        ] {
            assert!(
                matches!(digest_payload(&bad), Err(ConnectError::Auth(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn response_verifies_only_with_the_same_key() {
        let message = [b"{sha256}".as_slice(), &[1u8; 40]].concat();
        for response in [
            respond(b"key", &message).unwrap(),
            // A legacy peer answers a bare HMAC-MD5 of the whole message.
            Digest::Md5.tag(b"key", &message).unwrap(),
            [
                b"{sha384}".as_slice(),
                &Digest::Sha384.tag(b"key", &message).unwrap(),
            ]
            .concat(),
        ] {
            verify(b"key", &message, &response).unwrap();
            assert!(matches!(
                verify(b"other", &message, &response),
                Err(ConnectError::Auth(_))
            ));
            assert!(matches!(
                verify(b"key", &message, &response[..response.len() - 1]),
                Err(ConnectError::Auth(_))
            ));
        }
    }

    /// Known answers, as Python's `hmac.new(b"secret", message, digest)`.
    #[test]
    fn known_answers() {
        let message = [b"{sha256}".as_slice(), &(0u8..40).collect::<Vec<_>>()].concat();
        let modern = respond(b"secret", &message).unwrap();
        assert_eq!(&modern[..8], b"{sha256}");
        assert_eq!(hex(&modern[8..]), KNOWN_SHA256);
        assert_eq!(
            hex(&Digest::Md5.tag(b"secret", &message).unwrap()),
            KNOWN_MD5_OF_MODERN
        );
        // A legacy 20-byte challenge gets a bare HMAC-MD5.
        let legacy: Vec<u8> = (0u8..20).collect();
        assert_eq!(hex(&respond(b"secret", &legacy).unwrap()), KNOWN_MD5_LEGACY);
    }

    const KNOWN_SHA256: &str = "fc57fbe650d6124b98215e7b5d197d5807ad69982d275a9735ea2d56f1fa6989";
    const KNOWN_MD5_OF_MODERN: &str = "8e48d2bb349b4b72b9382999ed5b62eb";
    const KNOWN_MD5_LEGACY: &str = "7defa9cc46abc3583325d17ccda75190";
}
