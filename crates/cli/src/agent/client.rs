//! The commands' side of the agent: ask for a cached unlock, hand one over
//! (starting the agent if none runs), forget one, lock. Nothing here fails
//! a command: an agent that is missing, slow, not ours or not an agent at
//! all is the same as an empty cache, and the command asks for the
//! passphrase as it would without one.

use super::{read_response, write_request, Op, Request, Response, Status, IO_TIMEOUT};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::net::UnixStream;
use zeroize::Zeroizing;

/// How long a command waits for an agent it started to listen.
const START_WAIT: Duration = Duration::from_secs(2);

/// The agent at one socket path.
#[derive(Debug)]
pub struct Agent {
    socket: PathBuf,
}

impl Agent {
    /// The agent at the default socket ([`super::socket_path`]); `None` if
    /// there is no place for one.
    pub fn locate() -> Option<Agent> {
        super::socket_path().map(|socket| Agent { socket })
    }

    /// The secret cached under `key`, if an agent of ours holds one.
    pub async fn get(&self, key: &str) -> Option<Zeroizing<Vec<u8>>> {
        match self.call(Request::new(Op::Get, key)).await {
            Ok(Response {
                status: Status::Ok,
                payload,
            }) => Some(payload),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, socket = %self.socket.display(), "no cached unlock from the agent");
                None
            }
        }
    }

    /// Caches `secret` under `key` for `idle` after its last use, starting
    /// the agent if none runs. Failure is logged, not returned: the next
    /// command asks for the passphrase again.
    pub async fn put(&self, key: &str, secret: &[u8], idle: Duration) {
        let mut request = Request::new(Op::Put, key);
        request.secret = Zeroizing::new(secret.to_vec());
        request.ttl_secs = u32::try_from(idle.as_secs().max(1)).unwrap_or(u32::MAX);
        // The secret goes only to a listener that has answered as an agent.
        let ready = match self.is_running().await {
            Ok(true) => Ok(()),
            Ok(false) => self.start().await,
            Err(e) => Err(e),
        };
        let result = match ready {
            Ok(()) => self.call(request).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(Response {
                status: Status::Ok, ..
            }) => tracing::debug!(socket = %self.socket.display(), "unlock cached by the agent"),
            Ok(_) => tracing::debug!("the agent refused to cache the unlock"),
            Err(e) => tracing::debug!(error = %e, "the unlock is not cached"),
        }
    }

    /// Forgets what is cached under `key` (the agent exits if that was the
    /// last).
    pub async fn forget(&self, key: &str) {
        if let Err(e) = self.call(Request::new(Op::Forget, key)).await {
            tracing::debug!(error = %e, "could not ask the agent to forget an unlock");
        }
    }

    /// Forgets everything and stops the agent: how many unlocks it held, or
    /// `None` if no agent of ours runs.
    pub async fn lock(&self) -> Option<usize> {
        match self.call(Request::new(Op::Lock, "")).await {
            Ok(Response {
                status: Status::Ok,
                payload,
            }) => Some(
                std::str::from_utf8(&payload)
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0),
            ),
            Ok(_) => Some(0),
            Err(e) => {
                tracing::debug!(error = %e, "no agent to lock");
                None
            }
        }
    }

    /// True if a chatvault agent answers at the socket, false if nothing
    /// listens there (no socket, or a stale one); an error for a listener
    /// that is not ours or not an agent.
    async fn is_running(&self) -> io::Result<bool> {
        match self.ping().await? {
            Some(Response {
                status: Status::Ok,
                payload,
            }) if payload.starts_with(b"chatvault-agent ") => Ok(true),
            Some(_) => Err(refused("the socket's listener is not a chatvault agent")),
            None => Ok(false),
        }
    }

    /// Pings the agent: `None` if nothing listens.
    async fn ping(&self) -> io::Result<Option<Response>> {
        match self.connect().await {
            Ok(stream) => exchange(stream, &Request::new(Op::Ping, ""))
                .await
                .map(Some),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    async fn call(&self, request: Request) -> io::Result<Response> {
        let stream = self.connect().await?;
        exchange(stream, &request).await
    }

    /// Connects, after checking that the socket's directory is this user's
    /// alone and the socket is this user's, and that the listening process
    /// runs as this user.
    async fn connect(&self) -> io::Result<UnixStream> {
        let uid = super::my_uid();
        check_private_dir(parent(&self.socket)?, uid)?;
        let meta = std::fs::symlink_metadata(&self.socket)?;
        if !meta.file_type().is_socket() || meta.uid() != uid {
            return Err(refused("the agent socket is not a socket of this user"));
        }
        let stream = tokio::time::timeout(IO_TIMEOUT, UnixStream::connect(&self.socket))
            .await
            .map_err(|_| refused("the agent does not accept connections"))??;
        if stream.peer_cred()?.uid() != uid {
            return Err(refused("the agent socket is served by another user"));
        }
        Ok(stream)
    }

    /// Starts an agent on the socket and waits until it answers.
    async fn start(&self) -> io::Result<()> {
        let dir = parent(&self.socket)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        check_private_dir(dir, super::my_uid())?;
        let exe = std::env::current_exe()?;
        // A clean environment: the agent must not hold the passphrase
        // variable, and needs nothing from it.
        let mut child = std::process::Command::new(exe)
            .arg("agent")
            .arg("--socket")
            .arg(&self.socket)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        // The agent outlives this command; reaping it here keeps a
        // long-running command (`watch`) from holding a zombie.
        std::thread::spawn(move || child.wait());
        let deadline = tokio::time::Instant::now() + START_WAIT;
        loop {
            match self.is_running().await {
                Ok(true) => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Ok(false) if tokio::time::Instant::now() >= deadline => {
                    return Err(refused("the agent did not start"))
                }
                Ok(false) | Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
}

async fn exchange(mut stream: UnixStream, request: &Request) -> io::Result<Response> {
    tokio::time::timeout(IO_TIMEOUT, async {
        write_request(&mut stream, request).await?;
        read_response(&mut stream).await
    })
    .await
    .map_err(|_| refused("the agent did not answer in time"))?
}

fn parent(socket: &Path) -> io::Result<&Path> {
    socket
        .parent()
        .ok_or_else(|| refused("the agent socket has no directory"))
}

/// The socket's directory must be a real directory owned by `uid` that
/// nobody else can enter or write.
fn check_private_dir(dir: &Path, uid: u32) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(refused(&format!(
            "{} is not a directory of this user alone (mode 0700): not used for the agent",
            dir.display()
        )));
    }
    Ok(())
}

fn refused(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, message.to_string())
}
