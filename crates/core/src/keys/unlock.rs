//! Opening a vault's keys: the key file from the backend (or the replica's
//! copy when the backend is away), checked against what this device
//! trusts (`docs/design.md` §3.3), with the replica's copy kept in step;
//! or a new vault's key file when the backend holds none. The one place
//! the facade, a re-read ([`VaultKeys::reread`](super::VaultKeys::reread))
//! and key changes keep the trusted copy.

use super::blocking;
use crate::envelope::{EnvelopeCipher, KeyProtection, KeyTrust, Unlock};
use crate::ids::VaultId;
use crate::replica::Replica;
use crate::storage::{DynStorage, PutPrecondition};
use crate::{Error, Result};
use std::sync::Arc;

fn protection(unlock: &Unlock, work_factor: Option<u8>) -> KeyProtection {
    let protection = match unlock {
        Unlock::Passphrase(passphrase) => KeyProtection::for_passphrase(passphrase.clone()),
        Unlock::Identity(identity) => KeyProtection::for_recipients([identity.to_public()]),
    };
    match work_factor {
        Some(log_n) => protection.with_work_factor(log_n),
        None => protection,
    }
}

/// Decrypts a key file off the runtime (scrypt is deliberately slow).
async fn open_key_file(key_file: Vec<u8>, unlock: Unlock) -> Result<EnvelopeCipher> {
    blocking(move || EnvelopeCipher::from_key_file(&key_file, &unlock)).await
}

/// A cipher opened from a key file, and the X25519 identity that opened it
/// (see [`EnvelopeCipher::from_key_file_with_identity`]).
pub type Opened = (Arc<EnvelopeCipher>, Option<age::x25519::Identity>);

/// Decrypts a key file off the runtime, keeping the identity that opened
/// it.
pub async fn open_key_file_with_identity(key_file: Vec<u8>, unlock: Unlock) -> Result<Opened> {
    blocking(move || EnvelopeCipher::from_key_file_with_identity(&key_file, &unlock))
        .await
        .map(|(cipher, identity)| (Arc::new(cipher), identity))
}

/// Unlocks the vault's key file from the backend (keeping a copy in the
/// replica for offline unlock), or from that copy when the backend is
/// unreachable, or creates the vault when the backend has no key file.
///
/// `known` is a key file already opened while opening (the replica's copy,
/// to read the stored Supabase session): the same file is not opened again.
///
/// Errors: [`Error::WrongKey`] when `unlock` does not open the key file;
/// [`Error::Tampered`] or [`Error::InvalidInput`] for a key file the
/// replica's [`KeyTrust`] does not admit (rolled back, forged, another
/// vault's); [`Error::InvalidInput`] for a replica of another vault;
/// network errors when the backend is away and the replica holds no copy.
pub async fn unlock_vault(
    storage: &DynStorage,
    replica: &Replica,
    unlock: Unlock,
    work_factor: Option<u8>,
    known: Option<(Vec<u8>, Opened)>,
) -> Result<Opened> {
    let open = |key_file: Vec<u8>, unlock: Unlock| {
        let known = known.clone();
        async move {
            match known {
                Some((bytes, opened)) if bytes == key_file => Ok(opened),
                _ => open_key_file_with_identity(key_file, unlock).await,
            }
        }
    };
    // Two devices creating the same vault at once: one key file wins, the
    // other device unlocks it on the second pass.
    for _ in 0..2 {
        let key_file = match storage.get_keyring().await {
            Ok(Some(blob)) => blob.bytes.to_vec(),
            Ok(None) => {
                if let Some((vault, _)) = replica.identity()? {
                    // Recreating the vault here would give this backend a
                    // key file but none of the vault's records.
                    return Err(Error::invalid(format!(
                        "the replica {} belongs to vault {vault}, but the backend holds no \
                         vault; use another replica path for this backend",
                        replica.path().display()
                    )));
                }
                let protection = protection(&unlock, work_factor);
                // Sealing the key file runs scrypt: keep it off the runtime.
                let (cipher, key_file) = blocking(move || {
                    let cipher = EnvelopeCipher::generate(VaultId::new());
                    let key_file = cipher.to_key_file(&protection)?;
                    Ok((cipher, key_file))
                })
                .await?;
                match storage
                    .put_keyring(key_file.clone().into(), PutPrecondition::Absent)
                    .await
                {
                    Ok(_) => {
                        keep_key_file(replica, &cipher, key_file).await?;
                        // The new passphrase identity is not kept: the
                        // next open finds it.
                        return Ok((Arc::new(cipher), None));
                    }
                    Err(Error::Conflict { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(e) if e.is_retriable() => match replica.key_file()? {
                Some(local) => {
                    tracing::info!(error = %e, "backend unreachable; unlocking with the replica's copy of the key file");
                    return open(local, unlock).await;
                }
                None => return Err(e),
            },
            Err(e) => return Err(e),
        };
        let (cipher, identity) = open(key_file.clone(), unlock.clone()).await?;
        // The local copy opens with the same identity when only the keys
        // changed since: no second scrypt.
        let check_with = match &identity {
            Some(identity) => Unlock::Identity(identity.clone()),
            None => unlock.clone(),
        };
        let missing = keys_missing_for_queued_changes(replica, &cipher)?;
        let trusted = check_against_local_copy(
            replica,
            &cipher,
            &key_file,
            (&check_with, &unlock),
            !missing.is_empty(),
        )
        .await?;
        if let Some(trusted) = trusted {
            if hold_keys_of_queued_changes(&cipher, &trusted, &missing) {
                // The replica's copy keeps the retired keys until the queued
                // changes are re-sealed (the first push does it): a crash
                // before then must not lose them.
                return Ok((cipher, identity));
            }
        }
        keep_key_file(replica, &cipher, key_file).await?;
        return Ok((cipher, identity));
    }
    Err(Error::Unavailable {
        message: "the vault's key file changed twice while unlocking; try again".into(),
        source: None,
    })
}

/// Refuses a key file from the server that rolls back, replaces or forges
/// the one this device last trusted: the replica's [`KeyTrust`] must admit
/// it (`docs/design.md` §3.3). The trust holds key ids and tags, not keys,
/// so it is checked even when the current secret no longer opens the
/// replica's copy (the passphrase was changed on another device). A
/// replica from before the trust was kept falls back to opening its copy
/// and [`EnvelopeCipher::check_successor`].
///
/// Returns the copy's keyring when the server's file differs, the copy
/// opens, and it is needed: for the check (no trust record) or because
/// `keys_needed` (queued changes need keys only the copy may hold). `fast`
/// (the identity that opened the server's file) is tried first; `unlock`
/// (the secret given) only if that does not open the copy.
async fn check_against_local_copy(
    replica: &Replica,
    cipher: &EnvelopeCipher,
    key_file: &[u8],
    (fast, unlock): (&Unlock, &Unlock),
    keys_needed: bool,
) -> Result<Option<EnvelopeCipher>> {
    let trust = replica.key_trust()?;
    if trust.is_some() {
        check_key_file_trust(trust.as_ref(), None, cipher)?;
        if !keys_needed {
            // Checked without the copy, and no queued change needs a key
            // from it: no second key file to open.
            return Ok(None);
        }
    }
    let Some(local) = replica.key_file()? else {
        return Ok(None);
    };
    if local == key_file {
        return Ok(None);
    }
    let opened = match open_key_file(local.clone(), fast.clone()).await {
        Err(Error::WrongKey { .. }) if !matches!(fast, Unlock::Passphrase(_)) => {
            open_key_file(local, unlock.clone()).await
        }
        other => other,
    };
    match opened {
        Ok(trusted) => {
            check_key_file_trust(trust.as_ref(), Some(&trusted), cipher)?;
            Ok(Some(trusted))
        }
        Err(Error::WrongKey { .. }) => {
            if check_key_file_trust(trust.as_ref(), None, cipher)? == TrustedBy::Nothing {
                tracing::warn!("the replica's key file copy does not open with this secret and the replica keeps no record of what it trusted (written by an older release); the server's key file is taken as it is");
            }
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// What a server's key file was checked against by
/// [`check_key_file_trust`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrustedBy {
    /// The replica's record of what this device trusts ([`KeyTrust`]).
    Record,
    /// The replica's copy of the key file, opened (a replica of an older
    /// release keeps no trust record).
    Copy,
    /// Nothing: no trust record, and no copy that opens with this secret.
    Nothing,
}

/// The one trust rule for a key file read from the server
/// (`docs/design.md` §3.3), used by opening a vault ([`unlock_vault`]) and
/// by `chatvault::verify`; a re-read adopts through the same successor rule
/// against the running keyring. The replica's trust record must admit
/// `server`; a replica without one compares the copy's keyring (`copy`,
/// when it opened) by [`EnvelopeCipher::check_successor`]; with neither
/// nothing is compared.
///
/// Errors: those of [`KeyTrust::admits`]: [`Error::InvalidInput`] for
/// another vault's key file, [`Error::Tampered`] for a rollback or a
/// substitution.
pub fn check_key_file_trust(
    trust: Option<&KeyTrust>,
    copy: Option<&EnvelopeCipher>,
    server: &EnvelopeCipher,
) -> Result<TrustedBy> {
    match (trust, copy) {
        (Some(trust), _) => trust.admits(server).map(|()| TrustedBy::Record),
        (None, Some(copy)) => copy.check_successor(server).map(|()| TrustedBy::Copy),
        (None, None) => Ok(TrustedBy::Nothing),
    }
}

/// The key ids that changes queued on this device are sealed under and
/// `cipher` (the server's key file) does not hold: keys another device
/// retired while this one was away.
fn keys_missing_for_queued_changes(replica: &Replica, cipher: &EnvelopeCipher) -> Result<Vec<u32>> {
    let held = cipher.key_ids();
    let mut missing: Vec<u32> = replica
        .due(None, None, usize::MAX)?
        .iter()
        .filter_map(|(_, record)| EnvelopeCipher::sealed_key_id(&record.summary).ok())
        .filter(|id| !held.contains(id))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    Ok(missing)
}

/// Changes queued on this device under data keys (`missing`) the server's
/// key file retired since (another device rotated, re-sealed and retired
/// while this one was away): the running cipher takes those keys back from
/// the replica's copy (`trusted`), so the first push can re-seal the
/// changes under the current key. True if it did (the copy must then be
/// kept).
fn hold_keys_of_queued_changes(
    cipher: &EnvelopeCipher,
    trusted: &EnvelopeCipher,
    missing: &[u32],
) -> bool {
    if missing.is_empty() {
        return false;
    }
    let taken = cipher.hold_retired_from(trusted, missing);
    if !taken.is_empty() {
        tracing::info!(keys = ?taken, "queued changes are sealed under retired data keys; they are re-sealed under the current key before they are pushed");
    }
    !taken.is_empty()
}

/// Keeps a copy of the key file in the replica, unless the replica belongs to
/// another vault (then opening fails, before anything is overwritten).
async fn keep_key_file(
    replica: &Replica,
    cipher: &EnvelopeCipher,
    key_file: Vec<u8>,
) -> Result<()> {
    if let Some((vault, _)) = replica.identity()? {
        if vault != cipher.vault() {
            return Err(Error::invalid(format!(
                "the replica {} belongs to vault {vault}, but the backend holds vault {}; \
                 use another replica path for this backend",
                replica.path().display(),
                cipher.vault()
            )));
        }
    }
    let trust = KeyTrust::of(cipher);
    let replica = replica.clone();
    blocking(move || replica.set_key_file(&key_file, &trust)).await
}
