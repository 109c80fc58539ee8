//! `completions SHELL`: a shell completion script.

use crate::{output, Cli};
use chatvault::Result;
use clap::CommandFactory;

/// `completions`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The shell
    shell: clap_complete::Shell,
}

/// Prints the script for the shell.
pub fn exec(args: &Args) -> Result<()> {
    // Generated whole first: clap_complete panics on a failed write.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "chatvault", &mut script);
    output::raw(&script);
    Ok(())
}
