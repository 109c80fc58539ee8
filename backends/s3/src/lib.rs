//! chatvault backend: S3 and S3-compatible object stores
