//! The end-to-end sync suite over ChatVault.
