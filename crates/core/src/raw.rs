//! Beneath the engine: the pieces applications do not need, kept public
//! for tests, benchmarks, tools that inspect a vault (`chatvault verify`)
//! and bindings that must look at sealed records themselves. Formats are in
//! `docs/design.md` (§4 for the encodings, §7 for the replica).
//!
//! - [`codec`]: the versioned encodings of a chat and its summary, before
//!   sealing;
//! - [`chunked`]: chat body format 6, a chat as a head and immutable
//!   chunks of messages;
//! - [`replica`]: the record-level types the [`Replica`](crate::Replica)
//!   hands out (headers, outbox entries, skipped records, the maintenance
//!   mark);
//! - [`open_record`]: opens one sealed record with every check the engine
//!   makes.

/// The versioned encodings of what gets sealed (`docs/design.md` §4).
pub mod codec {
    pub use crate::codec::*;
}

/// Chat body format 6: a chat as a head and content-addressed chunks
/// (`docs/design.md` §4.3).
pub mod chunked {
    pub use crate::chunked::*;
}

/// The record-level types of this device's replica (`docs/design.md` §7).
#[cfg(feature = "engine")]
pub mod replica {
    pub use crate::replica::{
        LocalState, MaintenanceMark, OutboxEntry, RecordHeader, SkipReason, SkippedEntry,
        StoredSummary, REPLICA_CACHE_BYTES, REPLICA_FORMAT,
    };
}

#[cfg(feature = "engine")]
pub use crate::engine::sealing::{open_record, OpenedRecord};
