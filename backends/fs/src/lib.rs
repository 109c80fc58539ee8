//! chatvault backend: a local folder (the default, embedded backend)
