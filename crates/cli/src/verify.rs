//! `verify`: checks the vault's key file, then opens every record on the
//! server and in this device's replica and reports each one that fails
//! authentication, cannot be decoded, or differs between the two.
//!
//! It does not open the vault the way the other commands do: it creates
//! no vault, pulls nothing and writes nothing to the replica, and a key
//! file that opening would refuse (damaged, replaced, rolled back) is
//! reported as a problem while the records are still checked with the key
//! file this device trusts.

use crate::output::out;
use crate::settings::{self, Location};
use chatvault::core::envelope::{EnvelopeCipher, Unlock};
use chatvault::core::raw::open_record;
use chatvault::core::storage::{Cursor, Part, SealedRecord};
use chatvault::core::{Cipher, Replica};
use chatvault::{Chat, ChatId, ChatSummary, DynStorage, Error, Result};
use std::collections::BTreeMap;
use std::sync::Arc;

/// How many changes one page of the server's feed asks for.
const PAGE: usize = 1000;

/// A record opened: its summary and (if it carries one) its body.
type Opened = (ChatSummary, Option<Chat>);

/// What was found wrong, printed as it is found.
#[derive(Default)]
struct Problems(usize);

impl Problems {
    fn report(&mut self, line: String) {
        self.0 += 1;
        // Problems quote errors, whose text may come from the server.
        out!("{}", crate::output::terminal(&line));
    }
}

/// Runs the check; `Err` (exit code 5) if anything is wrong.
pub async fn run(location: &Location) -> Result<()> {
    settings::check_credentials(&location.server)?;
    let unlock = settings::unlock(location)?;
    let storage = chatvault::open_url(&location.server).await?;
    // A device that never opened this vault has no replica: check the
    // server alone rather than create an empty replica file.
    let replica = if location.replica.exists() {
        let path = location.replica.clone();
        Some(blocking(move || Replica::open(path)).await?)
    } else {
        None
    };
    let mut problems = Problems::default();
    let cipher = check_key_file(&storage, replica.as_ref(), &unlock, &mut problems).await?;
    let (server, local) =
        check_records(&storage, replica.as_ref(), Arc::new(cipher), &mut problems).await?;
    out!(
        "checked the key file, {server} server records and {local} replica records: {}",
        if problems.0 == 0 {
            "all open and agree".to_string()
        } else {
            format!("{} problem(s)", problems.0)
        }
    );
    if problems.0 > 0 {
        return Err(Error::corrupt(
            format!("{} problem(s)", problems.0),
            "see the lines above; restore the damaged copy (e.g. `sync` from a good device) \
             or report it",
        ));
    }
    Ok(())
}

/// Runs `f` on a blocking thread (scrypt, replica I/O).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Local {
            message: format!("a background task failed: {e}"),
            source: None,
        })?
}

/// Opens a key file with `unlock` (scrypt: off the runtime).
async fn open_key_file(bytes: Vec<u8>, unlock: &Unlock) -> Result<EnvelopeCipher> {
    let unlock = unlock.clone();
    blocking(move || EnvelopeCipher::from_key_file(&bytes, &unlock)).await
}

fn describe(cipher: &EnvelopeCipher) -> String {
    format!(
        "version {}, fingerprint {}",
        cipher.keyring_version(),
        cipher.fingerprint()
    )
}

/// Checks the server's key file: it opens with the given secret, and it is
/// this device's copy (kept in the replica) or a valid successor of it: no
/// rollback to an older version, no substituted keyring
/// ([`EnvelopeCipher::check_successor`]). Returns the key file to open
/// records with: the server's if it passed, else this device's copy. Fails
/// (without a report) only when no key file opens at all: the secret is
/// wrong, or there is no vault.
async fn check_key_file(
    storage: &DynStorage,
    replica: Option<&Replica>,
    unlock: &Unlock,
    problems: &mut Problems,
) -> Result<EnvelopeCipher> {
    let server = storage.get_keyring().await?.map(|blob| blob.bytes.to_vec());
    let local = match replica {
        Some(replica) => replica.key_file()?,
        None => None,
    };
    let identity = match replica {
        Some(replica) => replica.identity()?,
        None => None,
    };
    let cipher = match (server, local) {
        (None, None) => {
            return Err(Error::NotFound {
                what: "a vault on this server (it holds no key file); nothing to verify".into(),
            })
        }
        (None, Some(local)) => {
            let trusted = open_key_file(local, unlock).await?;
            problems.report(format!(
                "key file  server: missing; this device holds {}",
                describe(&trusted)
            ));
            trusted
        }
        (Some(server), None) => {
            let cipher = open_key_file(server, unlock).await?;
            out!(
                "key file  {}: opens (this device holds no copy to compare it with; \
                 compare the fingerprint with another device)",
                describe(&cipher)
            );
            cipher
        }
        (Some(server), Some(local)) if server == local => {
            let cipher = open_key_file(server, unlock).await?;
            out!(
                "key file  {}: opens, the same as this device's copy",
                describe(&cipher)
            );
            cipher
        }
        (Some(server), Some(local)) => {
            let trusted = open_key_file(local, unlock).await;
            let theirs = open_key_file(server, unlock).await;
            match (trusted, theirs) {
                (Ok(trusted), Ok(theirs)) => match trusted.check_successor(&theirs) {
                    Ok(()) => {
                        out!(
                            "key file  {}: opens, a valid successor of this device's copy \
                             (version {})",
                            describe(&theirs),
                            trusted.keyring_version()
                        );
                        theirs
                    }
                    Err(e) => {
                        problems.report(format!(
                            "key file  server {}: {e}; this device holds {}",
                            describe(&theirs),
                            describe(&trusted)
                        ));
                        trusted
                    }
                },
                (Ok(trusted), Err(e)) => {
                    problems.report(format!(
                        "key file  server: does not open with the secret that opens this \
                         device's copy ({}): damaged or replaced: {e}",
                        describe(&trusted)
                    ));
                    trusted
                }
                (Err(Error::WrongKey { .. }), Ok(theirs)) => {
                    // The passphrase was changed on another device: the old
                    // copy does not open, but what this device trusts of it
                    // (key ids and tags) is compared all the same.
                    let trust = match replica {
                        Some(replica) => replica.key_trust()?,
                        None => None,
                    };
                    match trust.map(|trust| trust.admits(&theirs)) {
                        Some(Ok(())) => out!(
                            "key file  {}: opens, a valid successor of what this device trusts \
                             (its older copy does not open with this secret: changed on another \
                             device?)",
                            describe(&theirs)
                        ),
                        Some(Err(e)) => {
                            problems.report(format!("key file  server {}: {e}", describe(&theirs)))
                        }
                        None => out!(
                            "key file  {}: opens; this device's older copy does not open with \
                             this secret (changed on another device?), so it was not compared",
                            describe(&theirs)
                        ),
                    }
                    theirs
                }
                (Err(e), Ok(theirs)) => {
                    problems.report(format!("key file  replica copy: {e}"));
                    theirs
                }
                (Err(_), Err(e)) => return Err(e),
            }
        }
    };
    if let Some((vault, _)) = identity {
        if vault != cipher.vault() {
            problems.report(format!(
                "key file  it belongs to vault {}, but this device's replica to vault {vault}",
                cipher.vault()
            ));
        }
    }
    Ok(cipher)
}

/// Opens every record on the server and in the replica with `cipher`;
/// returns how many of each were checked.
async fn check_records(
    storage: &DynStorage,
    replica: Option<&Replica>,
    cipher: Arc<EnvelopeCipher>,
    problems: &mut Problems,
) -> Result<(usize, usize)> {
    let vault_id = cipher.vault();
    let cipher: Arc<dyn Cipher> = cipher;
    // The engine's own opener: what it would refuse, verify reports.
    let open = |record: &SealedRecord| -> Result<Opened> {
        let opened = open_record(cipher.clone(), vault_id, record.clone())?;
        Ok((opened.summary, opened.chat))
    };

    // The server: every chat's latest version from the change feed.
    let mut latest: BTreeMap<ChatId, u64> = BTreeMap::new();
    let mut cursor = Cursor::start();
    loop {
        let page = storage.changes(&cursor, PAGE).await?;
        page.check_progress(&cursor)?;
        if let Some(waiting) = &page.waiting {
            out!(
                "waiting: {} (files still on their way are checked once they arrive)",
                crate::output::terminal(waiting)
            );
        }
        for change in &page.changes {
            latest.insert(change.chat, change.version);
        }
        cursor = page.cursor;
        if !page.has_more {
            break;
        }
    }
    let ids: Vec<ChatId> = latest.keys().copied().collect();
    // A backend with concurrent writers returns each writer's current
    // record of a chat: every one of them is checked.
    let mut server: BTreeMap<ChatId, Vec<SealedRecord>> = BTreeMap::new();
    let mut server_records = 0;
    for chunk in ids.chunks(PAGE) {
        for record in storage.get(chunk, Part::Body).await? {
            server_records += 1;
            server.entry(record.chat).or_default().push(record);
        }
    }

    let mut opened_server: BTreeMap<ChatId, Vec<(u64, Opened)>> = BTreeMap::new();
    for (chat, records) in &server {
        for record in records {
            match open(record) {
                Ok(opened) => opened_server
                    .entry(*chat)
                    .or_default()
                    .push((record.version, opened)),
                Err(e) => problems.report(format!(
                    "server  chat {chat} version {}: {e}",
                    record.version
                )),
            }
        }
    }
    for chat in ids.iter().filter(|id| !server.contains_key(id)) {
        problems.report(format!(
            "server  chat {chat}: named by the change feed but missing"
        ));
    }

    let Some(replica) = replica else {
        return Ok((server_records, 0));
    };
    let stored: Vec<ChatId> = replica.summaries()?.iter().map(|s| s.chat).collect();
    let mut checked_local = 0usize;
    for chunk in stored.chunks(PAGE) {
        for record in replica.records(chunk, true)?.into_iter().flatten() {
            checked_local += 1;
            let local = match open(&record) {
                Ok(opened) => opened,
                Err(e) => {
                    problems.report(format!(
                        "replica chat {} version {}: {e}",
                        record.chat, record.version
                    ));
                    continue;
                }
            };
            // Two writers' records of one version may differ (concurrent
            // edits, merged by the engine): only a lone record of the
            // replica's version must hold the same content.
            let same_version: Vec<&Opened> = opened_server
                .get(&record.chat)
                .into_iter()
                .flatten()
                .filter(|(version, _)| *version == record.version)
                .map(|(_, opened)| opened)
                .collect();
            if let [theirs] = same_version.as_slice() {
                let differs = local.0 != theirs.0
                    || matches!((&local.1, &theirs.1), (Some(a), Some(b)) if a != b);
                if differs {
                    problems.report(format!(
                        "differs chat {} version {}: the replica and the server hold different \
                         content",
                        record.chat, record.version
                    ));
                }
            }
        }
    }
    Ok((server_records, checked_local))
}
