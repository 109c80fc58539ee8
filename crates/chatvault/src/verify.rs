//! [`verify`]: checks a vault's key file, then opens every record on the
//! server and in this device's replica and reports each one that fails
//! authentication, cannot be decoded, or differs between the two.
//!
//! It does not open the vault the way [`ChatVault`](crate::ChatVault)
//! does: it creates no vault, pulls nothing and writes nothing to the
//! replica, and a key file that opening would refuse (damaged, replaced,
//! rolled back) is reported as a problem while the records are still
//! checked with the key file this device trusts. Records are opened with
//! the engine's own opener ([`open_record`]), so verify accepts exactly
//! what a device accepts.

use crate::task::blocking;
use crate::{Chat, ChatId, ChatSummary, DynStorage, Error, Result};
use chatvault_core::envelope::{EnvelopeCipher, Unlock};
use chatvault_core::keys::{check_key_file_trust, TrustedBy};
use chatvault_core::raw::open_record;
use chatvault_core::storage::{Cursor, Part, SealedRecord};
use chatvault_core::{Cipher, Replica};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// How many changes one page of the server's feed asks for.
const PAGE: usize = 1000;

/// A record opened: its summary and (if it carries one) its body.
type Opened = (ChatSummary, Option<Chat>);

/// One line of a [`VerifyReport`], in the order it was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// Something checked and in order, or worth knowing (a file still on
    /// its way in a copied folder).
    Note(String),
    /// Something wrong: a record or key file that does not open, is not
    /// what the engine would accept, or differs between server and replica.
    Problem(String),
}

impl Finding {
    /// The line's text. It may quote errors whose text comes from the
    /// server: strip control characters before printing it on a terminal.
    pub fn text(&self) -> &str {
        match self {
            Finding::Note(text) | Finding::Problem(text) => text,
        }
    }
}

/// What [`verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Every note and problem, in the order found: the key file first,
    /// then the server's records, then the replica's.
    pub findings: Vec<Finding>,
    /// Records checked on the server (every writer's current record of
    /// each chat the change feed names).
    pub server_records: usize,
    /// Records checked in this device's replica (0 without one).
    pub replica_records: usize,
}

impl VerifyReport {
    /// How many problems were found.
    pub fn problems(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| matches!(f, Finding::Problem(_)))
            .count()
    }

    /// True when nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems() == 0
    }

    fn note(&mut self, line: String) {
        self.findings.push(Finding::Note(line));
    }

    fn report(&mut self, line: String) {
        self.findings.push(Finding::Problem(line));
    }
}

/// Checks the vault on `storage` without opening it: its key file opens
/// with `unlock` and is this device's copy (kept in the replica file at
/// `replica`, when it exists) or a valid successor of it; every record on
/// the server and in the replica opens as the engine opens it
/// ([`open_record`]: authenticated, bound to its vault, chat, part and
/// version, its body describing its chat, its deleted flag agreeing with
/// its summary); and a replica record holds what the server's lone record
/// of the same version holds. What is wrong is a [`Finding::Problem`] in
/// the report, not an error.
///
/// A replica path that does not exist (a device that never opened this
/// vault) is not created: the server is checked alone.
///
/// Errors (nothing checked): [`Error::WrongKey`] when `unlock` opens no key
/// file; [`Error::NotFound`] when the server holds no vault; the storage's
/// and the replica's errors.
pub async fn verify(storage: &DynStorage, replica: &Path, unlock: &Unlock) -> Result<VerifyReport> {
    let replica = if replica.exists() {
        let path = replica.to_path_buf();
        Some(blocking(move || Replica::open(path)).await?)
    } else {
        None
    };
    let mut report = VerifyReport::default();
    let cipher = check_key_file(storage, replica.as_ref(), unlock, &mut report).await?;
    let (server, local) =
        check_records(storage, replica.as_ref(), Arc::new(cipher), &mut report).await?;
    report.server_records = server;
    report.replica_records = local;
    Ok(report)
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
/// (core's one trust rule, [`check_key_file_trust`]). Returns the key file to open
/// records with: the server's if it passed, else this device's copy. Fails
/// (without a report) only when no key file opens at all: the secret is
/// wrong, or there is no vault.
async fn check_key_file(
    storage: &DynStorage,
    replica: Option<&Replica>,
    unlock: &Unlock,
    report: &mut VerifyReport,
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
            report.report(format!(
                "key file  server: missing; this device holds {}",
                describe(&trusted)
            ));
            trusted
        }
        (Some(server), None) => {
            let cipher = open_key_file(server, unlock).await?;
            report.note(format!(
                "key file  {}: opens (this device holds no copy to compare it with; \
                 compare the fingerprint with another device)",
                describe(&cipher)
            ));
            cipher
        }
        (Some(server), Some(local)) if server == local => {
            let cipher = open_key_file(server, unlock).await?;
            report.note(format!(
                "key file  {}: opens, the same as this device's copy",
                describe(&cipher)
            ));
            cipher
        }
        (Some(server), Some(local)) => {
            let trusted = open_key_file(local, unlock).await;
            let theirs = open_key_file(server, unlock).await;
            let trust = match replica {
                Some(replica) => replica.key_trust()?,
                None => None,
            };
            match (trusted, theirs) {
                (Ok(trusted), Ok(theirs)) => {
                    match check_key_file_trust(trust.as_ref(), Some(&trusted), &theirs) {
                        Ok(_) => {
                            report.note(format!(
                                "key file  {}: opens, a valid successor of this device's copy \
                                 (version {})",
                                describe(&theirs),
                                trusted.keyring_version()
                            ));
                            theirs
                        }
                        Err(e) => {
                            report.report(format!(
                                "key file  server {}: {e}; this device holds {}",
                                describe(&theirs),
                                describe(&trusted)
                            ));
                            trusted
                        }
                    }
                }
                (Ok(trusted), Err(e)) => {
                    report.report(format!(
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
                    match check_key_file_trust(trust.as_ref(), None, &theirs) {
                        Ok(TrustedBy::Nothing) => report.note(format!(
                            "key file  {}: opens; this device's older copy does not open with \
                             this secret (changed on another device?), so it was not compared",
                            describe(&theirs)
                        )),
                        Ok(_) => report.note(format!(
                            "key file  {}: opens, a valid successor of what this device trusts \
                             (its older copy does not open with this secret: changed on another \
                             device?)",
                            describe(&theirs)
                        )),
                        Err(e) => {
                            report.report(format!("key file  server {}: {e}", describe(&theirs)))
                        }
                    }
                    theirs
                }
                (Err(e), Ok(theirs)) => {
                    report.report(format!("key file  replica copy: {e}"));
                    theirs
                }
                (Err(_), Err(e)) => return Err(e),
            }
        }
    };
    if let Some((vault, _)) = identity {
        if vault != cipher.vault() {
            report.report(format!(
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
    report: &mut VerifyReport,
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
            report.note(format!(
                "waiting: {} (files still on their way are checked once they arrive)",
                waiting
            ));
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
                Err(e) => report.report(format!(
                    "server  chat {chat} version {}: {e}",
                    record.version
                )),
            }
        }
    }
    for chat in ids.iter().filter(|id| !server.contains_key(id)) {
        report.report(format!(
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
                    report.report(format!(
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
                    report.report(format!(
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
