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
use zeroize::Zeroizing;

/// How long a fresh agent waits for its first secret before exiting.
const FIRST_PUT_GRACE: Duration = Duration::from_secs(30);
/// How often the agent checks that its socket is still its own.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// One cached unlock.
struct Entry {
    secret: Zeroizing<Vec<u8>>,
    idle: Duration,
    /// On the [`boot_clock`]: the entry is gone from this time on.
    expires: Duration,
}

/// Time since boot, counting the time the machine was suspended
/// (`CLOCK_BOOTTIME` on Linux, as OpenSSH's agent uses; elsewhere the
/// monotonic clock, which counts suspend on macOS and the BSDs). tokio's
/// `Instant` stops while suspended: an unlock cached for 15 minutes before
/// closing the lid would still be there hours later.
fn boot_clock() -> Duration {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let id = rustix::time::ClockId::Boottime;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let id = rustix::time::ClockId::Monotonic;
    Duration::try_from(rustix::time::clock_gettime(id)).unwrap_or_default()
}

/// Whether an entry expiring at `expires` is still alive at `now` (both on
/// the [`boot_clock`]).
fn alive(expires: Duration, now: Duration) -> bool {
    now < expires
}

/// The cached unlocks. Every method takes the time on the [`boot_clock`],
/// so expiry is a pure function of it (and testable with any clock).
#[derive(Default)]
struct Cache {
    entries: HashMap<String, Entry>,
}

impl Cache {
    /// Forgets every entry expired at `now`.
    fn sweep(&mut self, now: Duration) {
        self.entries.retain(|_, entry| alive(entry.expires, now));
    }

    /// The secret under `key`, its idle timeout renewed from `now`; `None`
    /// (and the entry forgotten) once past its deadline, whether or not
    /// the loop's timer has fired yet.
    fn get(&mut self, key: &str, now: Duration) -> Option<&Zeroizing<Vec<u8>>> {
        if !self
            .entries
            .get(key)
            .is_some_and(|entry| alive(entry.expires, now))
        {
            self.entries.remove(key);
            return None;
        }
        let entry = self.entries.get_mut(key)?;
        entry.expires = now.saturating_add(entry.idle);
        Some(&entry.secret)
    }

    /// Caches `secret` under `key` for `idle` after its last use.
    fn put(&mut self, key: String, secret: Zeroizing<Vec<u8>>, idle: Duration, now: Duration) {
        let expires = now.saturating_add(idle);
        self.entries.insert(
            key,
            Entry {
                secret,
                idle,
                expires,
            },
        );
    }

    /// When the next entry expires.
    fn next_expiry(&self) -> Option<Duration> {
        self.entries.values().map(|e| e.expires).min()
    }
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
    let started = boot_clock();
    let mut held_any = false;
    let mut cache = Cache::default();
    loop {
        let now = boot_clock();
        cache.sweep(now);
        if cache.entries.is_empty() && (held_any || now >= started + FIRST_PUT_GRACE) {
            break;
        }
        // A removed or replaced socket (its directory deleted, another
        // agent bound it) leaves this agent unreachable: exit.
        if !std::fs::symlink_metadata(socket).is_ok_and(|m| m.ino() == inode) {
            return Ok(());
        }
        // The wait runs on tokio's clock, which stops while suspended; at
        // most CHECK_EVERY of it passes before the sweep above looks at
        // the boot clock again, and Get checks expiry on its own.
        let mut wake = now + CHECK_EVERY;
        if let Some(first) = cache.next_expiry() {
            wake = wake.min(first);
        }
        if !held_any {
            wake = wake.min(started + FIRST_PUT_GRACE);
        }
        let sleep = wake.saturating_sub(now);
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let handled =
                    tokio::time::timeout(IO_TIMEOUT, handle(stream, uid, &mut cache)).await;
                match handled {
                    Ok(Ok(Flow::Stop)) => break,
                    Ok(Ok(Flow::Continue)) => held_any |= !cache.entries.is_empty(),
                    // A client that errs or stalls only loses its own request.
                    Ok(Err(_)) | Err(_) => {}
                }
            }
            () = tokio::time::sleep(sleep) => {}
        }
    }
    cache.entries.clear();
    if std::fs::symlink_metadata(socket).is_ok_and(|m| m.ino() == inode) {
        let _ = std::fs::remove_file(socket);
    }
    Ok(())
}

async fn handle(mut stream: UnixStream, uid: u32, cache: &mut Cache) -> io::Result<Flow> {
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
        Op::Get => match cache.get(&key, boot_clock()) {
            Some(secret) => write_response(&mut stream, Status::Ok, secret).await?,
            None => write_response(&mut stream, Status::Missing, &[]).await?,
        },
        Op::Put => {
            if secret.is_empty() || ttl_secs == 0 || u64::from(ttl_secs) > MAX_TIMEOUT_SECS {
                write_response(&mut stream, Status::Refused, b"empty secret or bad ttl").await?;
                return Ok(Flow::Continue);
            }
            let idle = Duration::from_secs(u64::from(ttl_secs));
            cache.put(key, secret, idle, boot_clock());
            write_response(&mut stream, Status::Ok, &[]).await?;
        }
        Op::Forget => {
            let status = match cache.entries.remove(&key) {
                Some(_) => Status::Ok,
                None => Status::Missing,
            };
            write_response(&mut stream, status, &[]).await?;
        }
        Op::Lock => {
            let count = cache.entries.len().to_string();
            cache.entries.clear();
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

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn secret() -> Zeroizing<Vec<u8>> {
        Zeroizing::new(b"AGE-SECRET-KEY-1TEST".to_vec())
    }

    #[test]
    fn a_get_after_the_deadline_is_missing_though_no_sweep_ran() {
        let mut cache = Cache::default();
        let start = 1000 * SECOND;
        cache.put("vault".into(), secret(), 10 * SECOND, start);
        // The timer has not fired (no sweep): the Get itself must see that
        // the entry is past its deadline, and must not renew it.
        assert!(cache.get("vault", start + 11 * SECOND).is_none());
        assert!(cache.get("vault", start + 12 * SECOND).is_none());
    }

    #[test]
    fn a_get_before_the_deadline_renews_the_idle_timeout() {
        let mut cache = Cache::default();
        let start = 1000 * SECOND;
        cache.put("vault".into(), secret(), 10 * SECOND, start);
        assert!(cache.get("vault", start + 9 * SECOND).is_some());
        assert!(cache.get("vault", start + 18 * SECOND).is_some());
        cache.sweep(start + 27 * SECOND);
        assert_eq!(cache.next_expiry(), Some(start + 28 * SECOND));
        cache.sweep(start + 28 * SECOND);
        assert!(cache.entries.is_empty());
    }

    #[test]
    fn the_boot_clock_moves_forward() {
        let first = boot_clock();
        std::thread::sleep(Duration::from_millis(5));
        assert!(boot_clock() > first);
        assert!(first > Duration::ZERO);
    }
}
