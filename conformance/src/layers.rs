//! Storage wrappers for tests and benches: counting and fault injection.
