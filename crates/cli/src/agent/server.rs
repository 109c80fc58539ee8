//! `chatvault agent`: the process that holds the cached unlocks. Started
//! by the first command that unlocks with a passphrase or recovery key,
//! detached from it; one connection at a time, one request each.

use super::{read_request, write_response, Op, Request, Status, IO_TIMEOUT, MAX_TIMEOUT_SECS};
use std::collections::HashMap;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::time::Instant;
use zeroize::Zeroizing;

/// How long a fresh agent waits for its first secret before exiting.
const FIRST_PUT_GRACE: Duration = Duration::from_secs(30);
/// How often the agent checks that its socket is still its own.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// One cached unlock.
struct Entry {
    secret: Zeroizing<Vec<u8>>,
    idle: Duration,
    expires: Instant,
}

/// What to do after a request.
enum Flow {
    Continue,
    Stop,
}

/// Runs the agent on `socket` until it holds nothing, is locked, or loses
/// its socket. Returns an error only when it cannot start.
pub fn run(socket: &Path) -> io::Result<()> {
    harden();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(socket))
}

/// Leaves the terminal's session (a Ctrl-C or hang-up of the command that
/// started it does not reach it), refuses ptrace and core dumps by other
/// processes of this user (Linux), and lets go of the working directory.
fn harden() {
    // Fails only if already a session leader, which changes nothing here.
    let _ = rustix::process::setsid();
    #[cfg(target_os = "linux")]
    {
        let _ =
            rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    }
    let _ = std::env::set_current_dir("/");
}

/// Binds the socket, replacing a stale one nobody answers on; refuses to
/// replace a live agent.
fn bind(socket: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(socket) {
        Ok(listener) => Ok(listener),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another agent already listens on this socket",
                ));
            }
            std::fs::remove_file(socket)?;
            UnixListener::bind(socket)
        }
        Err(e) => Err(e),
    }
}

async fn serve(socket: &Path) -> io::Result<()> {
    let listener = bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    let inode = std::fs::symlink_metadata(socket)?.ino();
    let uid = super::my_uid();
    let started = Instant::now();
    let mut held_any = false;
    let mut entries: HashMap<String, Entry> = HashMap::new();
    loop {
        let now = Instant::now();
        entries.retain(|_, entry| entry.expires > now);
        if entries.is_empty() && (held_any || now >= started + FIRST_PUT_GRACE) {
            break;
        }
        // A removed or replaced socket (its directory deleted, another
        // agent bound it) leaves this agent unreachable: exit.
        if !std::fs::symlink_metadata(socket).is_ok_and(|m| m.ino() == inode) {
            return Ok(());
        }
        let mut wake = now + CHECK_EVERY;
        if let Some(first) = entries.values().map(|e| e.expires).min() {
            wake = wake.min(first);
        }
        if !held_any {
            wake = wake.min(started + FIRST_PUT_GRACE);
        }
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let handled =
                    tokio::time::timeout(IO_TIMEOUT, handle(stream, uid, &mut entries)).await;
                match handled {
                    Ok(Ok(Flow::Stop)) => break,
                    Ok(Ok(Flow::Continue)) => held_any |= !entries.is_empty(),
                    // A client that errs or stalls only loses its own request.
                    Ok(Err(_)) | Err(_) => {}
                }
            }
            () = tokio::time::sleep_until(wake) => {}
        }
    }
    entries.clear();
    if std::fs::symlink_metadata(socket).is_ok_and(|m| m.ino() == inode) {
        let _ = std::fs::remove_file(socket);
    }
    Ok(())
}

async fn handle(
    mut stream: UnixStream,
    uid: u32,
    entries: &mut HashMap<String, Entry>,
) -> io::Result<Flow> {
    // Only this user's processes; the directory's mode already keeps others
    // out, this holds even if it was loosened.
    if stream.peer_cred()?.uid() != uid {
        return Ok(Flow::Continue);
    }
    let request = read_request(&mut stream).await?;
    let Request {
        op,
        key,
        secret,
        ttl_secs,
    } = request;
    match op {
        Op::Get => match entries.get_mut(&key) {
            Some(entry) => {
                entry.expires = Instant::now() + entry.idle;
                write_response(&mut stream, Status::Ok, &entry.secret).await?;
            }
            None => write_response(&mut stream, Status::Missing, &[]).await?,
        },
        Op::Put => {
            if secret.is_empty() || ttl_secs == 0 || u64::from(ttl_secs) > MAX_TIMEOUT_SECS {
                write_response(&mut stream, Status::Refused, b"empty secret or bad ttl").await?;
                return Ok(Flow::Continue);
            }
            let idle = Duration::from_secs(u64::from(ttl_secs));
            entries.insert(
                key,
                Entry {
                    secret,
                    idle,
                    expires: Instant::now() + idle,
                },
            );
            write_response(&mut stream, Status::Ok, &[]).await?;
        }
        Op::Forget => {
            let status = match entries.remove(&key) {
                Some(_) => Status::Ok,
                None => Status::Missing,
            };
            write_response(&mut stream, status, &[]).await?;
        }
        Op::Lock => {
            let count = entries.len().to_string();
            entries.clear();
            write_response(&mut stream, Status::Ok, count.as_bytes()).await?;
            return Ok(Flow::Stop);
        }
        Op::Ping => {
            let me = format!(
                "chatvault-agent {} pid {}",
                env!("CARGO_PKG_VERSION"),
                std::process::id()
            );
            write_response(&mut stream, Status::Ok, me.as_bytes()).await?;
        }
    }
    Ok(Flow::Continue)
}
