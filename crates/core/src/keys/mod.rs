//! [`VaultKeys`]: the key management a person does — list what unlocks the
//! vault, add a device, remove one, change the passphrase, create a recovery
//! key, rotate the data key.
//!
//! Every change is a read-modify-write of the vault's key file (format in
//! `docs/design.md` §3): read the server's file, open it with this
//! session's secret, check it follows the keyring this device holds
//! ([`EnvelopeCipher::check_successor`]: no rollback, no substitution),
//! edit a fresh copy, and store it with
//! [`PutPrecondition::Version`] of the file read. When another device wrote
//! in between, the change starts over once from that device's file; a
//! second conflict is [`Error::KeyFileConflict`] and nothing was changed.
//! Only after the server took the new file does the running cipher adopt it
//! (a rotation's new key then seals every new write at once) and the
//! replica's copy follow it.
//!
//! Why a device can be added or removed without the passphrase: the
//! passphrase slot seals a *passphrase identity* (an age X25519 identity)
//! with scrypt, and the keyring is encrypted to that identity's public key
//! like to any device. Any device can therefore re-encrypt the keyring to
//! the passphrase without knowing it, and the passphrase slot is kept byte
//! for byte until the passphrase changes.
//!
//! ```no_run
//! # async fn demo(keys: &chatvault_core::keys::VaultKeys) -> chatvault_core::Result<()> {
//! // On the laptop, with the phone's public key (`age-keygen -y phone.txt`):
//! keys.add_device("age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p", "phone").await?;
//! for p in keys.protections() {
//!     println!("{:<10} {:<12} {}", p.kind, p.id(), p.label);
//! }
//! // The phone is lost: remove it; the data key rotates with it.
//! let removed = keys.remove("phone").await?;
//! assert!(removed.new_key_id > 1);
//! # Ok(())
//! # }
//! ```

mod unlock;

pub use unlock::{
    check_key_file_trust, open_key_file_with_identity, unlock_vault, Opened, TrustedBy,
};

use crate::engine::{KeyringSource, KeyringUpdate};
use crate::envelope::{
    new_passphrase_slot, now_millis, parse_recipient, EnvelopeCipher, KeyFileView, KeyTrust,
    Protection, ProtectionKind, Unlock,
};
use crate::replica::Replica;
use crate::storage::{DynStorage, PutPrecondition};
use crate::{Error, Result};
use age::secrecy::{ExposeSecret, SecretString};
use age::x25519;
use std::fmt;
use std::sync::{Arc, Mutex};

/// A recovery key, as [`VaultKeys::create_recovery_key`] returns it once:
/// an age X25519 identity (`AGE-SECRET-KEY-1…`). Write it down; it unlocks
/// the vault like the passphrase
/// ([`Unlock::Identity`], or typed where a passphrase is asked for).
pub struct RecoveryKey {
    identity: x25519::Identity,
}

impl RecoveryKey {
    /// The secret to write down: `AGE-SECRET-KEY-1…`.
    pub fn secret(&self) -> SecretString {
        self.identity.to_string()
    }

    /// What unlocks the vault with it.
    pub fn unlock(&self) -> Unlock {
        Unlock::Identity(self.identity.clone())
    }

    /// Its public half, as listed among the vault's protections.
    pub fn recipient(&self) -> String {
        self.identity.to_public().to_string()
    }
}

impl fmt::Debug for RecoveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecoveryKey(for {})", self.identity.to_public())
    }
}

/// Parses a secret typed where a passphrase is asked for: an age X25519
/// identity (`AGE-SECRET-KEY-1…`, a recovery key or a device key) unlocks
/// as that identity, anything else as a passphrase.
pub fn unlock_from_secret(secret: SecretString) -> Unlock {
    let text = secret.expose_secret().trim();
    if text.starts_with("AGE-SECRET-KEY-1") {
        if let Ok(identity) = text.parse::<x25519::Identity>() {
            return Unlock::Identity(identity);
        }
    }
    Unlock::Passphrase(secret)
}

/// What [`VaultKeys::remove`] did.
#[derive(Clone, Debug)]
pub struct Removed {
    /// The protection that was removed.
    pub protection: Protection,
    /// The data key id new records are sealed with from now on: every
    /// removal rotates the data key.
    pub new_key_id: u32,
}

/// A key file being edited: a fresh cipher opened from the server's file,
/// its protections and its passphrase slot. Edits never touch the running
/// cipher, so a failed change leaves nothing changed.
struct Draft {
    cipher: EnvelopeCipher,
    protections: Vec<Protection>,
    passphrase_slot: Option<Vec<u8>>,
    /// The unlock this session uses after the change (passwd changes it).
    next_unlock: Option<Unlock>,
}

type Edit<T> = dyn Fn(&mut Draft, &Settings) -> Result<T> + Send + Sync;

#[derive(Clone)]
struct Settings {
    work_factor: Option<u8>,
    unlock: Unlock,
}

/// Key management for one open vault: see the [module docs](self).
///
/// Holds the running cipher (which adopts every change this device makes or
/// reads), the secret this session unlocked with, the storage and the
/// replica (which keeps a copy of every key file this device writes). It is
/// also the engine's [`KeyringSource`]: a record under an unknown key id
/// makes the engine re-read the key file through it
/// ([`Engine::refresh_keyring`](crate::engine::Engine::refresh_keyring)).
pub struct VaultKeys {
    storage: DynStorage,
    cipher: Arc<EnvelopeCipher>,
    unlock: Mutex<Unlock>,
    work_factor: Option<u8>,
    replica: Replica,
}

impl fmt::Debug for VaultKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultKeys")
            .field("cipher", &self.cipher)
            .field("unlock", &*self.lock_unlock())
            .finish_non_exhaustive()
    }
}

impl VaultKeys {
    /// Key management over `storage` for `cipher`, unlocked with `unlock`
    /// (used to open the server's key file before each change); `replica`
    /// keeps a copy of every key file this device writes (the copy unlocks
    /// offline and is what a reopen checks the server's file against).
    pub fn new(
        storage: DynStorage,
        cipher: Arc<EnvelopeCipher>,
        unlock: Unlock,
        replica: Replica,
    ) -> Self {
        Self {
            storage,
            cipher,
            unlock: Mutex::new(unlock),
            work_factor: None,
            replica,
        }
    }

    /// scrypt work factor (`log2 N`, 1..=22) of a new passphrase slot
    /// ([`change_passphrase`](Self::change_passphrase)); default: age's,
    /// about one second. Lower only for tests.
    pub fn with_work_factor(mut self, work_factor: Option<u8>) -> Self {
        self.work_factor = work_factor;
        self
    }

    /// The running cipher.
    pub fn cipher(&self) -> &Arc<EnvelopeCipher> {
        &self.cipher
    }

    fn lock_unlock(&self) -> std::sync::MutexGuard<'_, Unlock> {
        // Only an Unlock is guarded: a panic cannot leave it half-written.
        self.unlock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What unlocks the vault, as of the key file this device last read or
    /// wrote (no I/O; [`Engine::refresh_keyring`](crate::engine::Engine::refresh_keyring) first for the server's
    /// latest). Empty for a key file written before chatvault kept the list
    /// (the first key change writes it).
    pub fn protections(&self) -> Vec<Protection> {
        self.cipher.protections()
    }

    /// Re-reads the server's key file and adopts what changed (new data
    /// keys, the current key, the protections list) into the running
    /// cipher. Returns the file read when anything changed; the replica's
    /// copy is not replaced yet: [`Engine::refresh_keyring`](crate::engine::Engine::refresh_keyring)
    /// first re-seals queued changes under the new current key, then keeps
    /// the copy (what a restart unlocks with, which may drop a retired key).
    ///
    /// Errors: [`Error::WrongKey`] when this session's secret no longer
    /// opens the key file (this device was removed, or the passphrase was
    /// changed on another device: open the vault again with the new one);
    /// [`Error::Tampered`] for a rolled-back or substituted key file;
    /// network errors as the storage reports them.
    pub async fn reread(&self) -> Result<Option<KeyringUpdate>> {
        let Some(blob) = self.storage.get_keyring().await? else {
            return Ok(None);
        };
        let unlock = self.lock_unlock().clone();
        let key_file = blob.bytes.to_vec();
        let opened = {
            let bytes = key_file.clone();
            blocking(move || EnvelopeCipher::from_key_file(&bytes, &unlock)).await
        };
        let newer = opened.map_err(explain_wrong_key)?;
        if !self.cipher.adopt_keys(&newer)? {
            return Ok(None);
        }
        Ok(Some(KeyringUpdate {
            current_key_id: self.cipher.current_key_id(),
            key_file,
            trust: KeyTrust::of(&newer),
        }))
    }

    /// Adds a device: its age X25519 recipient (`age1…`, as `age-keygen -y`
    /// prints it) can unlock the vault from now on. `label` names it in
    /// listings (at most 64 bytes; empty: `device`).
    ///
    /// Errors: [`Error::InvalidInput`] for a malformed recipient, a label
    /// too long, or a recipient already in the list; plus those of every key
    /// change (see the [module docs](self)).
    pub async fn add_device(&self, recipient: &str, label: &str) -> Result<Protection> {
        let recipient = parse_recipient(recipient)?.to_string();
        let label = if label.trim().is_empty() {
            "device".to_string()
        } else {
            label.trim().to_string()
        };
        self.change(Arc::new(move |draft: &mut Draft, _: &Settings| {
            if draft.protections.iter().any(|p| p.recipient == recipient) {
                return Err(Error::invalid(format!(
                    "{recipient} already unlocks this vault"
                )));
            }
            let added = Protection {
                kind: ProtectionKind::Device,
                label: label.clone(),
                recipient: recipient.clone(),
                added_ms: now_millis(),
            };
            draft.protections.push(added.clone());
            Ok(added)
        }))
        .await
    }

    /// Removes one protection, named by its [id](Protection::id), its full
    /// recipient, its label (if no other has it) or a unique prefix of at
    /// least 8 characters of its recipient. Every removal (a device, the
    /// recovery key, the passphrase) also rotates the data key, in the same
    /// key file, so records written from now on are unreadable with the
    /// removed secret.
    /// What that device already downloaded, and the data keys it held,
    /// cannot be taken back: records sealed before stay readable to it
    /// until they are re-sealed and the old key retired.
    ///
    /// Errors: [`Error::NotFound`] when nothing matches; [`Error::InvalidInput`]
    /// when the name is ambiguous, it is the last protection (a vault
    /// nobody can unlock is refused) or it is what this session unlocked
    /// with (do that from another device); plus those of every key change.
    pub async fn remove(&self, which: &str) -> Result<Removed> {
        let which = which.trim().to_string();
        self.change(Arc::new(move |draft: &mut Draft, settings: &Settings| {
            let index = find_protection(&draft.protections, &which)?;
            if draft.protections.len() == 1 {
                return Err(Error::invalid(format!(
                    "{} is the vault's last protection; add another (a device, a recovery key) \
                     before removing it",
                    describe(&draft.protections[index])
                )));
            }
            if unlocked_by(settings, &draft.protections[index]) {
                return Err(Error::invalid(format!(
                    "{} is what this session unlocked with; remove it from another device (or \
                     after unlocking with another protection)",
                    describe(&draft.protections[index])
                )));
            }
            let protection = draft.protections.remove(index);
            if protection.kind == ProtectionKind::Passphrase {
                draft.passphrase_slot = None;
            }
            // Whoever holds the removed secret, with any older key file (a
            // server keeps them for a while), opens nothing written from now on.
            let new_key_id = draft.cipher.rotate();
            Ok(Removed {
                protection,
                new_key_id,
            })
        }))
        .await
    }

    /// Sets the vault's passphrase (adding one if the vault has none): a new
    /// passphrase identity under a new scrypt slot; the old passphrase stops
    /// unlocking the key file. Replacing a passphrase also rotates the data
    /// key in the same key file: the old passphrase, together with an older
    /// key file a server may still keep, opens nothing written from now on
    /// (re-sealing older records stays lazy: `reseal_stale`). A session that
    /// unlocked with the old passphrase continues with the new one.
    ///
    /// Errors: [`Error::InvalidInput`] for an empty passphrase; plus those of
    /// every key change.
    pub async fn change_passphrase(&self, passphrase: SecretString) -> Result<()> {
        if passphrase.expose_secret().is_empty() {
            return Err(Error::invalid("the new passphrase is empty"));
        }
        self.change(Arc::new(move |draft: &mut Draft, settings: &Settings| {
            let (slot, recipient) = new_passphrase_slot(&passphrase, settings.work_factor)?;
            if draft
                .protections
                .iter()
                .any(|p| p.kind == ProtectionKind::Passphrase)
            {
                // The old passphrase, with any older key file, must open
                // nothing written from now on.
                draft.cipher.rotate();
            }
            draft
                .protections
                .retain(|p| p.kind != ProtectionKind::Passphrase);
            draft.protections.insert(
                0,
                Protection {
                    kind: ProtectionKind::Passphrase,
                    label: "passphrase".to_string(),
                    recipient: recipient.to_string(),
                    added_ms: now_millis(),
                },
            );
            draft.passphrase_slot = Some(slot);
            if matches!(settings.unlock, Unlock::Passphrase(_)) {
                draft.next_unlock = Some(Unlock::Passphrase(passphrase.clone()));
            }
            Ok(())
        }))
        .await
    }

    /// Creates a recovery key, replacing the previous one if any, and
    /// returns it: the only time it is shown. It unlocks the vault like the
    /// passphrase. Replacing an earlier recovery key rotates the data key in
    /// the same key file, as every secret replacement does.
    ///
    /// Errors: those of every key change.
    pub async fn create_recovery_key(&self) -> Result<RecoveryKey> {
        let identity = x25519::Identity::generate();
        let recipient = identity.to_public().to_string();
        let unlock = Unlock::Identity(identity.clone());
        self.change(Arc::new(move |draft: &mut Draft, settings: &Settings| {
            // A session unlocked with the recovery key being replaced goes on
            // with the new one.
            if draft
                .protections
                .iter()
                .any(|p| p.kind == ProtectionKind::Recovery && unlocked_by(settings, p))
            {
                draft.next_unlock = Some(unlock.clone());
            }
            if draft
                .protections
                .iter()
                .any(|p| p.kind == ProtectionKind::Recovery)
            {
                // The replaced recovery key opens nothing written from now on.
                draft.cipher.rotate();
            }
            draft
                .protections
                .retain(|p| p.kind != ProtectionKind::Recovery);
            draft.protections.push(Protection {
                kind: ProtectionKind::Recovery,
                label: "recovery key".to_string(),
                recipient: recipient.clone(),
                added_ms: now_millis(),
            });
            Ok(())
        }))
        .await?;
        Ok(RecoveryKey { identity })
    }

    /// Rotates the data key: a new random key becomes current (every device
    /// seals with it once it re-reads the key file, which it does at the
    /// first record it cannot open); old keys stay so old records open.
    /// Returns the new key id.
    ///
    /// Errors: those of every key change.
    pub async fn rotate(&self) -> Result<u32> {
        self.change(Arc::new(|draft: &mut Draft, _: &Settings| {
            Ok(draft.cipher.rotate())
        }))
        .await
    }

    /// Raises the vault's format floor to `floor` (`docs/design.md` §3.6):
    /// from then on every device writes vault format `floor`, and releases
    /// that read only older formats refuse the vault
    /// ([`Error::UnsupportedFormat`] naming the format) instead of
    /// misreading or overwriting what newer devices wrote. The floor never
    /// goes down. Returns false, writing nothing, if it already is at least
    /// `floor`.
    ///
    /// Errors: [`Error::UnsupportedFormat`] for a floor above
    /// [`VAULT_FORMAT`](crate::raw::codec::VAULT_FORMAT); those of every
    /// key change.
    pub async fn raise_format_floor(&self, floor: u8) -> Result<bool> {
        if self.cipher.format_floor() >= floor {
            return Ok(false);
        }
        self.change(Arc::new(move |draft: &mut Draft, _: &Settings| {
            draft.cipher.raise_format_floor(floor)
        }))
        .await
    }

    /// Retires the data keys `key_ids` (never the current one): records
    /// sealed under them stop opening everywhere, so call this only once no
    /// record references them (see `ChatVault::retire_unused_keys`, which
    /// checks). Ids the keyring no longer holds are ignored. Returns the
    /// ids retired.
    ///
    /// Errors: those of every key change.
    pub async fn retire(&self, key_ids: Vec<u32>) -> Result<Vec<u32>> {
        let retired = self
            .change(Arc::new(move |draft: &mut Draft, _: &Settings| {
                let current = draft.cipher.current_key_id();
                let held = draft.cipher.key_ids();
                let mut retired = Vec::new();
                for id in key_ids.iter().copied() {
                    if id != current && held.contains(&id) {
                        draft.cipher.retire(id)?;
                        retired.push(id);
                    }
                }
                Ok(retired)
            }))
            .await?;
        for id in &retired {
            // The running cipher follows the file; a key it never held is
            // no error here.
            let _ = self.cipher.retire(*id);
        }
        Ok(retired)
    }

    /// One key change: read, open, check, edit, write with a version
    /// precondition; once more from the new file on a conflict.
    async fn change<T: Send + 'static>(&self, edit: Arc<Edit<T>>) -> Result<T> {
        let mut current = None;
        for _ in 0..2 {
            let blob = self
                .storage
                .get_keyring()
                .await?
                .ok_or_else(|| Error::NotFound {
                    what: "the vault's key file (the backend holds no vault)".to_string(),
                })?;
            let settings = Settings {
                work_factor: self.work_factor,
                unlock: self.lock_unlock().clone(),
            };
            let bytes = blob.bytes.to_vec();
            let edit = edit.clone();
            let running = self.cipher.clone();
            let (draft, file, value) =
                blocking(move || prepare(&bytes, &running, &settings, edit.as_ref())).await?;
            match self
                .storage
                .put_keyring(file.clone().into(), PutPrecondition::Version(blob.version))
                .await
            {
                Ok(_) => {
                    self.cipher.adopt_keys(&draft.cipher)?;
                    if let Some(unlock) = draft.next_unlock {
                        *self.lock_unlock() = unlock;
                    }
                    self.keep_copy(file, &draft.cipher).await?;
                    return Ok(value);
                }
                Err(Error::Conflict { current: now, .. }) => {
                    tracing::info!(
                        "another device changed the key file at the same time; starting over from its file"
                    );
                    current = now;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::KeyFileConflict { current })
    }

    /// Keeps `key_file` (from which `opened` was opened) as the replica's
    /// copy, with what this device now trusts of it.
    async fn keep_copy(&self, key_file: Vec<u8>, opened: &EnvelopeCipher) -> Result<()> {
        let trust = KeyTrust::of(opened);
        let replica = self.replica.clone();
        blocking(move || replica.set_key_file(&key_file, &trust)).await
    }
}

#[async_trait::async_trait]
impl KeyringSource for VaultKeys {
    async fn reread(&self) -> Result<Option<KeyringUpdate>> {
        VaultKeys::reread(self).await
    }

    fn current_key_id(&self) -> Option<u32> {
        Some(self.cipher.current_key_id())
    }
}

/// Opens the server's file, builds the draft, applies `edit` and seals the
/// new key file. Runs on a blocking thread (scrypt).
fn prepare<T>(
    bytes: &[u8],
    running: &EnvelopeCipher,
    settings: &Settings,
    edit: &Edit<T>,
) -> Result<(Draft, Vec<u8>, T)> {
    let cipher =
        EnvelopeCipher::from_key_file(bytes, &settings.unlock).map_err(explain_wrong_key)?;
    // A server that rolled the file back or replaced it must not get this
    // device to build on it.
    running.check_successor(&cipher)?;
    let view = KeyFileView::parse(bytes)?;
    let mut draft = Draft {
        protections: cipher.protections(),
        passphrase_slot: view.passphrase_slot.map(<[u8]>::to_vec),
        cipher,
        next_unlock: None,
    };
    if draft.protections.is_empty() {
        upgrade_legacy(&mut draft, &view, settings)?;
    }
    let value = edit(&mut draft, settings)?;
    let file = draft
        .cipher
        .seal_key_file(draft.protections.clone(), draft.passphrase_slot.as_deref())?;
    Ok((draft, file, value))
}

/// A key file written before the protections list (format 1): rebuilds
/// the list from what this session knows. The passphrase slot needs the
/// passphrase (it is re-made as a passphrase identity); the X25519 slot's
/// recipients cannot be read from it, so only this session's identity is
/// known: other recipients of such a file are not carried over.
fn upgrade_legacy(draft: &mut Draft, view: &KeyFileView<'_>, settings: &Settings) -> Result<()> {
    let added_ms = now_millis();
    if view.has_legacy_passphrase() {
        let Unlock::Passphrase(passphrase) = &settings.unlock else {
            return Err(Error::invalid(
                "this vault's key file was written before chatvault kept a list of what unlocks \
                 it, and its passphrase slot can only be carried over with the passphrase: run \
                 this key command once unlocked with the passphrase",
            ));
        };
        let (slot, recipient) = new_passphrase_slot(passphrase, settings.work_factor)?;
        draft.protections.push(Protection {
            kind: ProtectionKind::Passphrase,
            label: "passphrase".to_string(),
            recipient: recipient.to_string(),
            added_ms,
        });
        draft.passphrase_slot = Some(slot);
    }
    if view.has_x25519() {
        let Unlock::Identity(identity) = &settings.unlock else {
            return Err(Error::invalid(
                "this vault's key file was written before chatvault kept a list of what unlocks \
                 it, and its device keys cannot be read from it: run this key command once on a \
                 device unlocked with its identity",
            ));
        };
        draft.protections.push(Protection {
            kind: ProtectionKind::Device,
            label: "device 1".to_string(),
            recipient: identity.to_public().to_string(),
            added_ms,
        });
    }
    Ok(())
}

fn find_protection(protections: &[Protection], which: &str) -> Result<usize> {
    let matches = |f: &dyn Fn(&Protection) -> bool| -> Vec<usize> {
        protections
            .iter()
            .enumerate()
            .filter(|(_, p)| f(p))
            .map(|(i, _)| i)
            .collect()
    };
    let exact = matches(&|p| p.id() == which || p.recipient == which);
    let found = if !exact.is_empty() {
        exact
    } else {
        let by_label = matches(&|p| p.label == which);
        if !by_label.is_empty() {
            by_label
        } else if which.len() >= 8 {
            matches(&|p| p.recipient.starts_with(which) || p.id().starts_with(which))
        } else {
            Vec::new()
        }
    };
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(Error::NotFound {
            what: format!(
                "a protection named {which:?} (list them with `chatvault keys list`: an id, a \
                 label or a full age1… recipient)"
            ),
        }),
        many => Err(Error::invalid(format!(
            "{which:?} names {} protections ({}); use the id or the full recipient",
            many.len(),
            many.iter()
                .map(|i| protections[*i].id())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// True if `p` is the protection this session unlocked with.
fn unlocked_by(settings: &Settings, p: &Protection) -> bool {
    match &settings.unlock {
        Unlock::Passphrase(_) => p.kind == ProtectionKind::Passphrase,
        Unlock::Identity(identity) => identity.to_public().to_string() == p.recipient,
    }
}

fn describe(p: &Protection) -> String {
    format!("{} {:?} ({})", p.kind, p.label, p.id())
}

fn explain_wrong_key(e: Error) -> Error {
    match e {
        Error::WrongKey { message } => Error::WrongKey {
            message: format!(
                "{message}; this secret no longer opens the vault's key file: this device was \
                 removed from the vault, or the passphrase was changed on another device (open \
                 the vault again with the new passphrase, a recovery key, or have another device \
                 add this one back)"
            ),
        },
        other => other,
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Local {
            message: format!("a background key task failed: {e}"),
            source: None,
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_age_secret_key_typed_as_a_passphrase_unlocks_as_an_identity() {
        let identity = x25519::Identity::generate();
        assert!(matches!(
            unlock_from_secret(identity.to_string()),
            Unlock::Identity(i) if i.to_public().to_string() == identity.to_public().to_string()
        ));
        assert!(matches!(
            unlock_from_secret(SecretString::from("AGE-SECRET-KEY-1 is my passphrase")),
            Unlock::Passphrase(_)
        ));
    }

    fn device(label: &str) -> Protection {
        Protection {
            kind: ProtectionKind::Device,
            label: label.to_string(),
            recipient: x25519::Identity::generate().to_public().to_string(),
            added_ms: 0,
        }
    }

    #[test]
    fn protections_are_found_by_id_label_recipient_or_prefix() {
        let list = vec![device("laptop"), device("phone")];
        assert_eq!(find_protection(&list, "phone").expect("label"), 1);
        assert_eq!(find_protection(&list, &list[0].id()).expect("id"), 0);
        assert_eq!(find_protection(&list, &list[1].recipient).expect("full"), 1);
        assert_eq!(
            find_protection(&list, &list[0].recipient[..10]).expect("prefix"),
            0
        );
        assert!(matches!(
            find_protection(&list, "tablet"),
            Err(Error::NotFound { .. })
        ));
        let twins = vec![device("phone"), device("phone")];
        assert!(matches!(
            find_protection(&twins, "phone"),
            Err(Error::InvalidInput { .. })
        ));
    }
}
