//! `chatvault`: end-to-end encrypted chats from the terminal, over the
//! `chatvault` facade. Every command opens the vault, does its work, syncs
//! and exits; errors print the library's message and exit with code 1.

mod commands;
mod export;
mod import;
mod output;
mod settings;
mod watch;

use chatvault::Role;
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

const UNLOCK_HELP: &str = "\
Unlocking: the passphrase comes from CHATVAULT_PASSPHRASE, or else is read as
one line from standard input (it is not hidden while you type; pipe it in or
set the variable). --identity FILE unlocks with an age identity instead.
The first command against an empty server creates the vault, protected by
that passphrase or identity.

CHATVAULT_SCRYPT_WORK_FACTOR (log2 N, 1..=22) lowers the scrypt cost of a new
vault and of passphrase exports: for tests only, it weakens the passphrase.";

/// End-to-end encrypted chat storage that syncs every device.
#[derive(Debug, Parser)]
#[command(name = "chatvault", version, after_help = UNLOCK_HELP)]
struct Cli {
    /// Where the vault lives: file:///folder, s3://bucket/prefix or
    /// supabase+https://project.supabase.co [default: file://<data dir>/chatvault/server]
    #[arg(long, global = true, env = "CHATVAULT_SERVER", value_name = "URL")]
    server: Option<String>,

    /// This device's replica file [default: <data dir>/chatvault/replicas/<server hash>.redb]
    #[arg(long, global = true, env = "CHATVAULT_REPLICA", value_name = "PATH")]
    replica: Option<PathBuf>,

    /// Unlock with this age identity file (AGE-SECRET-KEY-…) instead of a passphrase
    #[arg(long, global = true, value_name = "FILE")]
    identity: Option<PathBuf>,

    /// Work from this device only: no pull, no push (writes stay queued)
    #[arg(long, global = true)]
    no_sync: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List chats (id, starred, messages, last activity, title), newest first
    Ls,
    /// Print a chat's messages in order
    Show {
        /// The chat's id
        chat: String,
    },
    /// Create a chat and print its id
    New {
        /// Its title
        title: String,
    },
    /// Append a message to a chat and print its id
    Add {
        /// The chat's id
        chat: String,
        /// Who wrote it
        #[arg(long, value_enum, default_value_t = CliRole::User)]
        role: CliRole,
        /// The message text
        text: String,
    },
    /// Rename a chat
    Rename {
        /// The chat's id
        chat: String,
        /// The new title
        title: String,
    },
    /// Star a chat
    Star {
        /// The chat's id
        chat: String,
    },
    /// Unstar a chat
    Unstar {
        /// The chat's id
        chat: String,
    },
    /// Delete a chat on every device
    Rm {
        /// The chat's id
        chat: String,
    },
    /// Delete one message of a chat on every device
    RmMessage {
        /// The chat's id
        chat: String,
        /// The message's id (see `show`)
        message: String,
    },
    /// Sync once: pull every change, push every queued one
    Sync,
    /// Sync in the background and print events until Ctrl-C
    Watch(WatchArgs),
    /// Write every chat as a standard age file (decrypt with `age -d`)
    Export(ExportArgs),
    /// Import chats from JSON Lines: {"title":..,"messages":[{"role":..,"content":..}]}
    Import {
        /// The .jsonl file
        file: PathBuf,
    },
    /// Show queued changes and the sync status (after a sync)
    Status,
}

#[derive(Debug, Args)]
struct WatchArgs {
    /// Seconds between polls
    #[arg(long, default_value_t = 5)]
    interval: u64,
    /// Stop after this many seconds (for scripts)
    #[arg(long = "for", value_name = "SECONDS")]
    duration: Option<u64>,
    /// Stop after this many chat events (upserted or deleted)
    #[arg(long, value_name = "N")]
    count: Option<u64>,
}

#[derive(Debug, Args)]
#[group(skip)]
#[command(group = ArgGroup::new("to").required(true).args(["passphrase_env", "recipient"]))]
struct ExportArgs {
    /// Encrypt to the passphrase held in this environment variable
    #[arg(long, value_name = "VAR")]
    passphrase_env: Option<String>,
    /// Encrypt to this age recipient (age1…); repeat for several
    #[arg(long, value_name = "AGE1…")]
    recipient: Vec<String>,
    /// Write here instead of standard output
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// The message roles, as command-line values.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum CliRole {
    User,
    Assistant,
    System,
    Tool,
}

impl From<CliRole> for Role {
    fn from(role: CliRole) -> Role {
        match role {
            CliRole::User => Role::User,
            CliRole::Assistant => Role::Assistant,
            CliRole::System => Role::System,
            CliRole::Tool => Role::Tool,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::error(&e);
            ExitCode::FAILURE
        }
    }
}
