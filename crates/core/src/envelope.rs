//! The default [`Cipher`](crate::Cipher): envelope encryption (being built).
