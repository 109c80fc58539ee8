//! The chatvault conformance suite: the Storage contract and end-to-end
//! sync, plus service fixtures that start what a backend needs.

pub mod fixtures;
pub mod layers;
pub mod storage;
pub mod sync;
