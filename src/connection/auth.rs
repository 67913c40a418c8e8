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
//! it holds the key. Only HMAC-SHA256 is spoken: a peer proposing another
//! digest (or the unprefixed HMAC-MD5 of Python 3.11 and older) is refused.
//! Every handshake frame is capped at 256 bytes and the whole exchange
//! runs against one deadline.

use std::io;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

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
/// The digest this side speaks, as named in the messages.
const DIGEST_PREFIX: &[u8] = b"{sha256}";
/// Length of an HMAC-SHA256.
const MAC_LENGTH: usize = 32;
/// Largest handshake frame accepted.
pub(super) const MAX_MESSAGE: usize = 256;
/// Legacy (MD5-only) challenges and responses have these lengths.
const LEGACY_LENGTHS: [usize; 2] = [20, 16];
/// Longest digest name Python accepts (`sha3_384`).
const MAX_DIGEST_NAME: usize = 8;
/// Digests Python 3.12 may propose; all but sha256 are refused here.
const KNOWN_DIGESTS: [&[u8]; 5] = [b"md5", b"sha256", b"sha384", b"sha3_256", b"sha3_384"];

/// Whether `frame` is a listener's challenge: what a client that holds no
/// authkey receives first from a listener that requires one.
pub(crate) fn is_challenge(frame: &[u8]) -> bool {
    frame.starts_with(CHALLENGE)
}

/// The listener's side: challenge the client, then answer its challenge.
pub(crate) fn serve(
    conn: &mut Connection,
    key: &[u8],
    timeout: Option<Duration>,
) -> Result<(), ConnectError> {
    capped(conn, timeout, |conn, deadline| {
        deliver_challenge(conn, key, deadline)?;
        answer_challenge(conn, key, deadline)
    })
}

/// The client's side: answer the listener's challenge, then challenge it.
pub(crate) fn join(
    conn: &mut Connection,
    key: &[u8],
    timeout: Option<Duration>,
) -> Result<(), ConnectError> {
    capped(conn, timeout, |conn, deadline| {
        answer_challenge(conn, key, deadline)?;
        deliver_challenge(conn, key, deadline)
    })
}

/// Runs `f` with the frame cap lowered to [`MAX_MESSAGE`] and one deadline.
fn capped(
    conn: &mut Connection,
    timeout: Option<Duration>,
    f: impl FnOnce(&Connection, Option<Instant>) -> Result<(), ConnectError>,
) -> Result<(), ConnectError> {
    let deadline = Deadline::from_timeout(timeout).instant();
    let cap = conn.max_frame();
    conn.set_max_frame(MAX_MESSAGE);
    let res = f(conn, deadline);
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
    digest_payload(message)?;
    let mut response = Vec::with_capacity(DIGEST_PREFIX.len() + MAC_LENGTH);
    response.extend_from_slice(DIGEST_PREFIX);
    response.extend_from_slice(&mac(key)?.chain_update(message).finalize().into_bytes());
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

/// Checks `response` against the challenge `message` we sent.
fn verify(key: &[u8], message: &[u8], response: &[u8]) -> Result<(), ConnectError> {
    let got = digest_payload(response)?;
    if got.len() != MAC_LENGTH {
        return Err(auth(format!(
            "expected a sha256 digest of {MAC_LENGTH} bytes, got {}",
            got.len()
        )));
    }
    // `verify_slice` compares in constant time.
    mac(key)?
        .chain_update(message)
        .verify_slice(got)
        .map_err(|_| auth("the peer's digest is wrong (different authkey)".into()))
}

/// Splits `{sha256}payload` and returns the payload; refuses legacy
/// (unprefixed) and other digests.
fn digest_payload(message: &[u8]) -> Result<&[u8], ConnectError> {
    if LEGACY_LENGTHS.contains(&message.len()) {
        return Err(auth(
            "the peer speaks the legacy HMAC-MD5 handshake, which is not supported".into(),
        ));
    }
    let name = match message.split_first() {
        Some((b'{', rest)) => rest
            .iter()
            .take(MAX_DIGEST_NAME + 1)
            .position(|&b| b == b'}')
            .map(|end| &rest[..end]),
        _ => None,
    };
    match name {
        Some(b"sha256") => Ok(&message[DIGEST_PREFIX.len()..]),
        Some(name) if KNOWN_DIGESTS.contains(&name) => Err(auth(format!(
            "the peer asks for digest {}; only sha256 is supported",
            name.escape_ascii()
        ))),
        _ => Err(auth(format!(
            "missing or unknown digest prefix in {}",
            shown(message)
        ))),
    }
}

/// HMAC-SHA256 keyed with `key` (HMAC takes keys of every length; the
/// error cannot happen).
fn mac(key: &[u8]) -> Result<Hmac<Sha256>, ConnectError> {
    Hmac::<Sha256>::new_from_slice(key).map_err(|_| auth("the authkey is unusable".into()))
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

    #[test]
    fn digest_prefix_parsing() {
        let msg = [b"{sha256}".as_slice(), &[7u8; 40]].concat();
        assert_eq!(digest_payload(&msg).unwrap(), &[7u8; 40]);
        for bad in [
            [b"{sha384}".as_slice(), &[0u8; 40]].concat(),
            [b"{sha256".as_slice(), &[0u8; 40]].concat(),
            vec![0u8; 20],
            vec![0u8; 16],
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
        let tag = mac(b"key")
            .unwrap()
            .chain_update(&message)
            .finalize()
            .into_bytes();
        let response = [DIGEST_PREFIX, tag.as_slice()].concat();
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

    /// A known answer: HMAC-SHA256 of a fixed challenge, as Python's
    /// `hmac.new(b"secret", b"{sha256}" + bytes(range(40)), "sha256")`.
    #[test]
    fn known_answer() {
        let message = [b"{sha256}".as_slice(), &(0u8..40).collect::<Vec<_>>()].concat();
        let tag = mac(b"secret")
            .unwrap()
            .chain_update(&message)
            .finalize()
            .into_bytes();
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, KNOWN_ANSWER);
    }

    const KNOWN_ANSWER: &str = "fc57fbe650d6124b98215e7b5d197d5807ad69982d275a9735ea2d56f1fa6989";
}
