//! `agent --socket SOCKET` (hidden): the unlock agent, started by the
//! commands themselves.

use std::path::PathBuf;
use std::process::ExitCode;

/// `agent`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The Unix socket to listen on
    #[arg(long)]
    socket: PathBuf,
}

/// Serves until the agent's idle timeout, on its own small runtime and
/// without tracing: it has no terminal.
pub fn exec(args: &Args) -> ExitCode {
    match crate::agent::server::run(&args.socket) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(crate::exit::LOCAL),
    }
}
