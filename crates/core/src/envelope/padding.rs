//! Size padding of sealed blobs: how long a padded plaintext is, and the
//! marker that lets the opener find where the real plaintext ends.
//!
//! A padded plaintext is `plaintext ‖ 0x80 ‖ 0x00…` (ISO/IEC 7816-4 style),
//! sealed whole, so the padding is authenticated with the record and a
//! server cannot trim or extend it. See `docs/design.md` §2.

use crate::{Error, Result};

/// How a sealed blob's length is rounded up, so that a record's size tells
/// the server less about the lengths of the messages inside it.
///
/// Padding is chosen by the writer and recorded in each blob's format byte;
/// readers open padded and unpadded blobs alike, so devices of one vault may
/// use different settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// No padding: a blob is its plaintext plus 45 bytes, and its length
    /// gives the plaintext's exact length away (blob format 1).
    Off,
    /// Padmé (Nikitin et al., "Reducing Metadata Leakage from Encrypted Files
    /// and Communication with PURBs", PETS 2019), after rounding up to at
    /// least `floor` bytes: a padded length leaks O(log log n) bits of a
    /// length n, and costs at most 12 % (less as records grow).
    Padme {
        /// Plaintexts shorter than this are all padded to this length, so
        /// short summaries and chats cannot be told apart at all.
        floor: u32,
    },
    /// The next power of two, at least `floor` bytes: a padded length leaks
    /// only log2 n, at up to 100 % extra bytes.
    PowerOfTwo {
        /// Plaintexts shorter than this are all padded to this length.
        floor: u32,
    },
}

impl Default for Padding {
    /// Padmé with a 256-byte floor: every summary shorter than 256 bytes
    /// looks the same, larger records pay at most 12 %.
    fn default() -> Self {
        Padding::Padme { floor: 256 }
    }
}

impl Padding {
    /// The length a plaintext of `len` bytes is padded to before sealing,
    /// the one-byte end marker included (`len + 1` at least). Unpadded
    /// ([`Padding::Off`]) blobs carry no marker: `len`.
    pub fn padded_len(self, len: usize) -> usize {
        match self {
            Padding::Off => len,
            Padding::Padme { floor } => padme(len.saturating_add(1).max(floor as usize)),
            Padding::PowerOfTwo { floor } => {
                let at_least = len.saturating_add(1).max(floor as usize);
                at_least.checked_next_power_of_two().unwrap_or(at_least)
            }
        }
    }

    /// Appends the end marker and zero bytes up to [`padded_len`](Self::padded_len).
    pub(crate) fn pad(self, buffer: &mut Vec<u8>, plaintext_len: usize) {
        if self == Padding::Off {
            return;
        }
        let target = self.padded_len(plaintext_len);
        buffer.push(MARKER);
        buffer.resize(buffer.len() + (target - plaintext_len - 1), 0);
    }
}

/// The byte that ends the real plaintext inside a padded one.
const MARKER: u8 = 0x80;

/// Padmé: keeps the top `floor(log2 e) + 1` bits of a length whose highest
/// set bit is bit `e` and rounds the rest up.
fn padme(len: usize) -> usize {
    if len < 2 {
        return len;
    }
    let e = usize::BITS - 1 - len.leading_zeros();
    let s = u32::BITS - e.leading_zeros();
    let last_bits = e - s;
    let mask = (1usize << last_bits) - 1;
    len.checked_add(mask).map_or(len, |sum| sum & !mask)
}

/// Strips the padding of an opened padded plaintext: everything from the
/// last `0x80` on. `what` names the blob in the error.
///
/// Errors: [`Error::Corrupt`] when no marker is there (a writer bug: the
/// padding is authenticated, so a server cannot cause it).
pub(crate) fn unpad(mut plaintext: Vec<u8>, what: impl Fn() -> String) -> Result<Vec<u8>> {
    let Some(end) = plaintext.iter().rposition(|&b| b != 0) else {
        return Err(Error::corrupt(what(), "padded plaintext has no end marker"));
    };
    if plaintext[end] != MARKER {
        return Err(Error::corrupt(
            what(),
            "padded plaintext does not end in the 0x80 marker and zero bytes",
        ));
    }
    plaintext.truncate(end);
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padme_matches_the_papers_examples_and_bound() {
        // Table 2 of the PURBs paper rounds 9 → 10, 100 → 104 …
        assert_eq!(padme(9), 10);
        assert_eq!(padme(100), 104);
        assert_eq!(padme(1000), 1024);
        assert_eq!(padme(1024), 1024);
        assert_eq!(padme(1025), 1088);
        for len in 2..200_000usize {
            let padded = padme(len);
            assert!(padded >= len, "{len}");
            assert!(padded as f64 <= len as f64 * 1.12 + 1.0, "{len} → {padded}");
        }
    }

    #[test]
    fn padded_lengths_take_few_distinct_values() {
        let padding = Padding::default();
        let distinct: std::collections::BTreeSet<usize> =
            (0..65_536).map(|len| padding.padded_len(len)).collect();
        // 65,536 exact lengths collapse into a few hundred buckets.
        assert!(distinct.len() < 400, "{} buckets", distinct.len());
        assert_eq!(padding.padded_len(0), 256);
        assert_eq!(padding.padded_len(255), 256);
        assert!(padding.padded_len(256) > 256);
    }

    #[test]
    fn power_of_two_rounds_up_past_the_marker() {
        let padding = Padding::PowerOfTwo { floor: 64 };
        assert_eq!(padding.padded_len(0), 64);
        assert_eq!(padding.padded_len(63), 64);
        assert_eq!(padding.padded_len(64), 128);
        assert_eq!(padding.padded_len(1000), 1024);
    }

    #[test]
    fn pad_then_unpad_round_trips_plaintexts_ending_in_marker_like_bytes() {
        for padding in [
            Padding::default(),
            Padding::Padme { floor: 0 },
            Padding::PowerOfTwo { floor: 1 },
        ] {
            for plaintext in [&b""[..], b"\x80", b"abc\x00", b"\x80\x00\x80", &[0u8; 300]] {
                let mut buffer = plaintext.to_vec();
                padding.pad(&mut buffer, plaintext.len());
                assert_eq!(buffer.len(), padding.padded_len(plaintext.len()));
                let back = unpad(buffer, String::new).expect("unpad");
                assert_eq!(back, plaintext, "{padding:?}");
            }
        }
    }

    #[test]
    fn a_padded_plaintext_without_marker_is_corrupt() {
        assert!(matches!(
            unpad(vec![0; 16], String::new),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            unpad(b"abc\x01\x00".to_vec(), String::new),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            unpad(Vec::new(), String::new),
            Err(Error::Corrupt { .. })
        ));
    }
}
