//! The chatvault conformance suite: the Storage contract and end-to-end sync, plus service fixtures
