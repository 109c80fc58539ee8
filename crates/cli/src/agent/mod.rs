//! The unlock cache: `chatvault agent`, a small process that keeps each
//! vault's unlocked identity in memory so that later commands skip the
//! passphrase's key derivation (about a second), in the manner of
//! ssh-agent or rbw-agent.
//!
//! What is cached is the vault's *passphrase identity* (or the recovery key
//! typed in its place): the age X25519 identity that opens the key file's
//! X25519 slot without scrypt ([`ChatVault::unlocked_identity`]). It lives
//! in the agent's memory only, per vault and replica, for an idle timeout
//! (default 15 minutes) after its last use; the agent exits when it holds
//! nothing. `chatvault lock` empties it and stops it.
//!
//! The agent listens on a Unix socket in a directory only this user can
//! enter (`$XDG_RUNTIME_DIR/chatvault`, else `chatvault/agent` under the
//! cache directory); both ends check that the other runs as the same user
//! (`SO_PEERCRED`). Protocol and threat model: `docs/design.md` §3.5.
//!
//! [`ChatVault::unlocked_identity`]: chatvault::ChatVault::unlocked_identity

pub mod client;
pub mod server;

use std::io;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

/// Set to a true value (`1`), the CLI neither asks an agent nor starts one.
pub const NO_AGENT_VAR: &str = "CHATVAULT_NO_AGENT";
/// Seconds an unlock stays cached after its last use.
pub const TIMEOUT_VAR: &str = "CHATVAULT_AGENT_TIMEOUT";
/// The idle timeout without `--agent-timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The longest idle timeout the agent accepts (a week).
pub const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;

/// Every frame starts with it: a listener that does not answer with it is
/// not a chatvault agent (of this protocol version) and is not trusted.
const MAGIC: &[u8; 8] = b"CVAGENT1";
/// Longest key (vault URL and replica path) a request may carry.
const MAX_KEY_LEN: usize = 4096;
/// Longest secret (an `AGE-SECRET-KEY-1…` line is 74 bytes).
const MAX_SECRET_LEN: usize = 256;
/// How long either end waits for the other before giving up.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// The socket's file name in its directory.
const SOCKET_NAME: &str = "agent.sock";

/// What a request asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// The secret cached under the key (refreshes its timeout).
    Get = 1,
    /// Cache the secret under the key for `ttl` seconds after its last use.
    Put = 2,
    /// Forget the key.
    Forget = 3,
    /// Forget everything and exit.
    Lock = 4,
    /// Who are you (`chatvault-agent VERSION pid PID`)?
    Ping = 5,
}

impl Op {
    fn from_code(code: u8) -> Option<Op> {
        [Op::Get, Op::Put, Op::Forget, Op::Lock, Op::Ping]
            .into_iter()
            .find(|op| *op as u8 == code)
    }
}

/// How the agent answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Done; the payload is the answer.
    Ok = 0,
    /// Nothing cached under that key.
    Missing = 1,
    /// The request was malformed or out of bounds.
    Refused = 2,
}

/// One request: `MAGIC | op (1) | key len (2, BE) | key | secret len (2,
/// BE) | secret | ttl seconds (4, BE)`.
pub(crate) struct Request {
    pub(crate) op: Op,
    pub(crate) key: String,
    pub(crate) secret: Zeroizing<Vec<u8>>,
    pub(crate) ttl_secs: u32,
}

impl Request {
    pub(crate) fn new(op: Op, key: &str) -> Request {
        Request {
            op,
            key: key.to_string(),
            secret: Zeroizing::new(Vec::new()),
            ttl_secs: 0,
        }
    }
}

/// One answer: `MAGIC | status (1) | payload len (2, BE) | payload`.
pub(crate) struct Response {
    pub(crate) status: Status,
    pub(crate) payload: Zeroizing<Vec<u8>>,
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

async fn read_magic(stream: &mut (impl AsyncRead + Unpin)) -> io::Result<()> {
    let mut magic = [0u8; MAGIC.len()];
    stream.read_exact(&mut magic).await?;
    if &magic != MAGIC {
        return Err(invalid(
            "the peer does not speak the chatvault agent protocol",
        ));
    }
    Ok(())
}

async fn read_field(
    stream: &mut (impl AsyncRead + Unpin),
    max: usize,
) -> io::Result<Zeroizing<Vec<u8>>> {
    let len = usize::from(stream.read_u16().await?);
    if len > max {
        return Err(invalid("a field is longer than the protocol allows"));
    }
    let mut bytes = Zeroizing::new(vec![0u8; len]);
    stream.read_exact(&mut bytes).await?;
    Ok(bytes)
}

fn push_field(out: &mut Vec<u8>, bytes: &[u8]) -> io::Result<()> {
    let len = u16::try_from(bytes.len()).map_err(|_| invalid("a field is too long"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

pub(crate) async fn write_request(
    stream: &mut (impl AsyncWrite + Unpin),
    request: &Request,
) -> io::Result<()> {
    if request.key.len() > MAX_KEY_LEN || request.secret.len() > MAX_SECRET_LEN {
        return Err(invalid("a field is longer than the protocol allows"));
    }
    let mut out = Zeroizing::new(Vec::with_capacity(
        MAGIC.len() + 9 + request.key.len() + request.secret.len(),
    ));
    out.extend_from_slice(MAGIC);
    out.push(request.op as u8);
    push_field(&mut out, request.key.as_bytes())?;
    push_field(&mut out, &request.secret)?;
    out.extend_from_slice(&request.ttl_secs.to_be_bytes());
    stream.write_all(&out).await?;
    stream.flush().await
}

pub(crate) async fn read_request(stream: &mut (impl AsyncRead + Unpin)) -> io::Result<Request> {
    read_magic(stream).await?;
    let op = Op::from_code(stream.read_u8().await?).ok_or_else(|| invalid("unknown op"))?;
    let key = read_field(stream, MAX_KEY_LEN).await?;
    let key = String::from_utf8(key.to_vec()).map_err(|_| invalid("the key is not UTF-8"))?;
    let secret = read_field(stream, MAX_SECRET_LEN).await?;
    let ttl_secs = stream.read_u32().await?;
    Ok(Request {
        op,
        key,
        secret,
        ttl_secs,
    })
}

pub(crate) async fn write_response(
    stream: &mut (impl AsyncWrite + Unpin),
    status: Status,
    payload: &[u8],
) -> io::Result<()> {
    let mut out = Zeroizing::new(Vec::with_capacity(MAGIC.len() + 3 + payload.len()));
    out.extend_from_slice(MAGIC);
    out.push(status as u8);
    push_field(&mut out, payload)?;
    stream.write_all(&out).await?;
    stream.flush().await
}

pub(crate) async fn read_response(stream: &mut (impl AsyncRead + Unpin)) -> io::Result<Response> {
    read_magic(stream).await?;
    let status = match stream.read_u8().await? {
        0 => Status::Ok,
        1 => Status::Missing,
        2 => Status::Refused,
        _ => return Err(invalid("unknown status")),
    };
    let payload = read_field(stream, MAX_KEY_LEN).await?;
    Ok(Response { status, payload })
}

/// The agent's socket: `$XDG_RUNTIME_DIR/chatvault/agent.sock`, else
/// `<cache dir>/chatvault/agent/agent.sock`. `None` without either.
pub fn socket_path() -> Option<PathBuf> {
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let dir = match runtime {
        Some(dir) => dir.join("chatvault"),
        None => directories::BaseDirs::new()?
            .cache_dir()
            .join("chatvault")
            .join("agent"),
    };
    Some(dir.join(SOCKET_NAME))
}

/// The idle timeout from `--agent-timeout` / [`TIMEOUT_VAR`], bounded.
pub fn timeout(seconds: Option<u64>) -> Duration {
    match seconds {
        Some(s) => Duration::from_secs(s.clamp(1, MAX_TIMEOUT_SECS)),
        None => DEFAULT_TIMEOUT,
    }
}

/// This process's real user id.
pub(crate) fn my_uid() -> u32 {
    rustix::process::getuid().as_raw()
}
