//! Standard age files: exports, and the encryption and decryption the key
//! file's slots share with them.

use crate::{Error, Result};
use age::secrecy::{ExposeSecret, SecretString};
use age::x25519;
use std::io::{Read, Write};
use zeroize::Zeroizing;

/// The largest scrypt work factor (`log2 N`) accepted: beyond it scrypt
/// needs more than 4 GiB of memory per unlock (age's own warning threshold).
pub(crate) const MAX_WORK_FACTOR: u8 = 22;

/// Whom a standard age file is encrypted to. age forbids mixing a
/// passphrase with other recipients in one file, hence one or the other.
#[derive(Clone, Debug)]
pub enum ExportTarget {
    /// Anyone with the passphrase decrypts it (`age -d`, which asks for it).
    Passphrase {
        /// The passphrase; must not be empty.
        passphrase: SecretString,
        /// scrypt work factor `log2 N` (1..=22); `None` uses age's default,
        /// tuned to about one second on this machine.
        work_factor: Option<u8>,
    },
    /// Each holder of a matching identity decrypts it
    /// (`age -d -i key.txt`). Must not be empty.
    Recipients(Vec<x25519::Recipient>),
}

/// Encrypts `plaintext` into a standard age file (binary, not armored) that
/// the `age` and `rage` command-line tools decrypt: an export with no
/// lock-in.
///
/// Errors: [`Error::InvalidInput`] for an empty passphrase, an empty
/// recipient list or a work factor outside 1..=22.
///
/// ```
/// use chatvault_core::envelope::{export_age, ExportTarget};
/// use std::io::Read;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let backup_key = age::x25519::Identity::generate();
/// let file = export_age(b"my chats", &ExportTarget::Recipients(vec![backup_key.to_public()]))?;
///
/// // What `age -d -i backup.txt` does:
/// let decryptor = age::Decryptor::new(&file[..])?;
/// let mut plaintext = Vec::new();
/// decryptor
///     .decrypt(std::iter::once(&backup_key as &dyn age::Identity))?
///     .read_to_end(&mut plaintext)?;
/// assert_eq!(plaintext, b"my chats");
/// # Ok(())
/// # }
/// ```
pub fn export_age(plaintext: &[u8], to: &ExportTarget) -> Result<Vec<u8>> {
    match to {
        ExportTarget::Passphrase {
            passphrase,
            work_factor,
        } => encrypt_to_passphrase(plaintext, passphrase, *work_factor),
        ExportTarget::Recipients(recipients) => encrypt_to_recipients(plaintext, recipients),
    }
}

/// A writer that encrypts what is written to it into a standard age file
/// on `out`, as [`export_age`] does in memory: for exports too large to
/// hold whole. Call `finish` on it once everything is written (a file
/// without it is truncated and does not decrypt).
///
/// Errors: those of [`export_age`].
pub fn export_age_writer<W: Write>(
    to: &ExportTarget,
    out: W,
) -> Result<age::stream::StreamWriter<W>> {
    match to {
        ExportTarget::Passphrase {
            passphrase,
            work_factor,
        } => {
            check_passphrase(passphrase)?;
            check_work_factor(*work_factor)?;
            let mut recipient = age::scrypt::Recipient::new(passphrase.clone());
            if let Some(n) = work_factor {
                recipient.set_work_factor(*n);
            }
            encrypting(out, std::iter::once(&recipient as &dyn age::Recipient))
        }
        ExportTarget::Recipients(recipients) => {
            if recipients.is_empty() {
                return Err(Error::invalid("no age recipients given"));
            }
            encrypting(out, recipients.iter().map(|r| r as &dyn age::Recipient))
        }
    }
}

fn encrypting<'a, W: Write>(
    out: W,
    recipients: impl Iterator<Item = &'a dyn age::Recipient>,
) -> Result<age::stream::StreamWriter<W>> {
    let failed = |e: &dyn std::fmt::Display| Error::invalid(format!("age encryption failed: {e}"));
    let encryptor = age::Encryptor::with_recipients(recipients).map_err(|e| failed(&e))?;
    encryptor.wrap_output(out).map_err(|e| failed(&e))
}

/// Checks a work factor before age sees it (age panics outside 1..64).
pub(crate) fn check_work_factor(work_factor: Option<u8>) -> Result<()> {
    match work_factor {
        Some(n) if n == 0 || n > MAX_WORK_FACTOR => Err(Error::invalid(format!(
            "scrypt work factor {n} is outside 1..={MAX_WORK_FACTOR}"
        ))),
        _ => Ok(()),
    }
}

pub(crate) fn check_passphrase(passphrase: &SecretString) -> Result<()> {
    if passphrase.expose_secret().is_empty() {
        return Err(Error::invalid("the passphrase is empty"));
    }
    Ok(())
}

pub(crate) fn encrypt_to_passphrase(
    plaintext: &[u8],
    passphrase: &SecretString,
    work_factor: Option<u8>,
) -> Result<Vec<u8>> {
    check_passphrase(passphrase)?;
    check_work_factor(work_factor)?;
    let mut recipient = age::scrypt::Recipient::new(passphrase.clone());
    if let Some(n) = work_factor {
        recipient.set_work_factor(n);
    }
    encrypt(
        plaintext,
        std::iter::once(&recipient as &dyn age::Recipient),
    )
}

pub(crate) fn encrypt_to_recipients(
    plaintext: &[u8],
    recipients: &[x25519::Recipient],
) -> Result<Vec<u8>> {
    if recipients.is_empty() {
        return Err(Error::invalid("no age recipients given"));
    }
    encrypt(
        plaintext,
        recipients.iter().map(|r| r as &dyn age::Recipient),
    )
}

fn encrypt<'a>(
    plaintext: &[u8],
    recipients: impl Iterator<Item = &'a dyn age::Recipient>,
) -> Result<Vec<u8>> {
    let failed = |e: &dyn std::fmt::Display| Error::invalid(format!("age encryption failed: {e}"));
    let encryptor = age::Encryptor::with_recipients(recipients).map_err(|e| failed(&e))?;
    let mut out = Vec::with_capacity(plaintext.len() + 256);
    let mut writer = encryptor.wrap_output(&mut out).map_err(|e| failed(&e))?;
    writer.write_all(plaintext).map_err(|e| failed(&e))?;
    writer.finish().map_err(|e| failed(&e))?;
    Ok(out)
}

/// Decrypts age file `bytes` (called `what` in errors) with `identity`.
///
/// A wrong passphrase or identity gives [`Error::WrongKey`]; a header whose
/// MAC or a payload whose tag fails gives [`Error::Tampered`]; anything
/// unparsable gives [`Error::Corrupt`].
pub(crate) fn decrypt(
    bytes: &[u8],
    identity: &dyn age::Identity,
    what: &str,
) -> Result<Zeroizing<Vec<u8>>> {
    let decryptor = age::Decryptor::new_buffered(bytes).map_err(|e| decrypt_error(e, what))?;
    let mut reader = decryptor
        .decrypt(std::iter::once(identity))
        .map_err(|e| decrypt_error(e, what))?;
    // The plaintext is shorter than the file, so this capacity is never
    // outgrown and no unzeroized copy is left behind by a reallocation.
    let mut plaintext = Zeroizing::new(Vec::with_capacity(bytes.len()));
    reader
        .read_to_end(&mut plaintext)
        .map_err(|_| Error::Tampered {
            what: what.to_string(),
        })?;
    Ok(plaintext)
}

fn decrypt_error(e: age::DecryptError, what: &str) -> Error {
    use age::DecryptError as E;
    match e {
        E::NoMatchingKeys | E::DecryptionFailed | E::KeyDecryptionFailed => Error::WrongKey {
            message: format!("{what}: {e}"),
        },
        E::InvalidMac => Error::Tampered {
            what: what.to_string(),
        },
        E::ExcessiveWork { required, .. } => Error::corrupt(
            what,
            format!(
                "its scrypt work factor 2^{required} exceeds chatvault's maximum of                  2^{MAX_WORK_FACTOR}; refusing a file that demands that much time and memory"
            ),
        ),
        other => Error::corrupt(what, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::{decrypt, export_age_writer, ExportTarget};
    use std::io::Write;

    #[test]
    fn a_streamed_export_decrypts_to_what_was_written() {
        let key = age::x25519::Identity::generate();
        let target = ExportTarget::Recipients(vec![key.to_public()]);
        let mut writer = export_age_writer(&target, Vec::new()).expect("a writer");
        for part in [&b"my "[..], b"chats", &[7u8; 100_000]] {
            writer.write_all(part).expect("write");
        }
        let file = writer.finish().expect("finish");
        let plaintext = decrypt(&file, &key, "the export").expect("decrypts");
        assert_eq!(&plaintext[..8], b"my chats");
        assert_eq!(plaintext.len(), 100_008);
        assert!(export_age_writer(&ExportTarget::Recipients(Vec::new()), Vec::new()).is_err());
    }
}
