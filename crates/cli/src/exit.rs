//! Exit codes, one per class of failure (listed in `--help`), and the
//! tracing output `-v` and `RUST_LOG` turn on.

use chatvault::Error;

/// Not found, conflict or another failure.
pub const OTHER: u8 = 1;
/// Bad arguments or input (clap uses 2 for usage errors too).
pub const USAGE: u8 = 2;
/// Wrong key, or the server refused our credentials.
pub const AUTH: u8 = 3;
/// The server cannot be reached.
pub const NETWORK: u8 = 4;
/// A record failed authentication or cannot be decoded.
pub const INTEGRITY: u8 = 5;
/// This device's files cannot be used.
pub const LOCAL: u8 = 6;

/// The exit code of `error`'s class.
pub fn code(error: &Error) -> u8 {
    match error {
        Error::InvalidInput { .. } | Error::TooLarge { .. } | Error::TwoVaults { .. } => USAGE,
        Error::WrongKey { .. } | Error::Unauthorized { .. } => AUTH,
        Error::Unavailable { .. } | Error::InTransit { .. } => NETWORK,
        Error::Corrupt { .. }
        | Error::Tampered { .. }
        | Error::UnknownKeyId { .. }
        | Error::UnsupportedFormat { .. } => INTEGRITY,
        Error::Local { .. } => LOCAL,
        _ => OTHER,
    }
}

/// Tracing on standard error: `RUST_LOG` if set, else `-v` (debug) or
/// `-vv` (trace) for chatvault's crates; nothing otherwise.
pub fn init_tracing(verbose: u8) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(filter) if !filter.is_empty() => filter,
        _ => match verbose {
            0 => return,
            1 => "chatvault=debug,chatvault_core=debug,chatvault_cli=debug".into(),
            _ => "chatvault=trace,chatvault_core=trace,chatvault_cli=trace,info".into(),
        },
    };
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .finish();
    // Only fails if a subscriber is already set, which nothing else does.
    let _ = tracing::subscriber::set_global_default(subscriber);
}
