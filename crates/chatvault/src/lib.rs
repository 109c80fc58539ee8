//! chatvault: end-to-end encrypted chat storage and sync; pick a backend with a Cargo feature
