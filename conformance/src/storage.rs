//! The Storage contract suite.
