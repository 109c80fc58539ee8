//! chatvault record layout over any object_store::ObjectStore (shared by the fs and s3 backends)
