//! `chatvault`: end-to-end encrypted chats from the terminal, over the
//! `chatvault` facade. Every command opens the vault, does its work, syncs
//! and exits; an error prints one line saying what to do and exits with
//! the code of its class ([`exit`]).

mod agent;
mod commands;
mod config;
mod exit;
mod export;
mod ids;
mod import;
mod keys;
mod login;
mod output;
mod search;
mod settings;
mod unlock;
mod verify;
mod watch;

use chatvault::Role;
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

const UNLOCK_HELP: &str = "\
Unlocking: the passphrase comes from CHATVAULT_PASSPHRASE, else it is typed at
the terminal (not shown), else read as one line from standard input (scripts).
--identity FILE unlocks with an age identity instead. The first command
against an empty server creates the vault, protected by that passphrase or
identity: a typed new passphrase is asked twice, and one the zxcvbn strength
estimate scores below 3 of 4 is refused unless --allow-weak-passphrase (or
CHATVAULT_ALLOW_WEAK_PASSPHRASE=1). Then `chatvault keys recovery` creates a
recovery key to write down.

Unlock once per session: once a passphrase or recovery key has unlocked a
vault, a background `chatvault agent` keeps the unlocked key in memory (never
on disk) until it has gone unused for 15 minutes (--agent-timeout SECONDS or
CHATVAULT_AGENT_TIMEOUT); later commands on this device need no passphrase.
`chatvault lock` forgets it at once; --no-agent or CHATVAULT_NO_AGENT=1 neither
uses nor starts the agent. `keys passwd`, `verify`, `login` and `logout`
always ask, and a passphrase set in CHATVAULT_PASSPHRASE is always checked
(a wrong one fails with exit 3). Any process running as your user can ask
the agent too.

Device keys: --identity FILE (or CHATVAULT_IDENTITY) given once for a vault
`init` remembered is remembered with it; later commands use it unless
CHATVAULT_PASSPHRASE is set.

A new passphrase (and a passphrase export) costs scrypt about a second of this
machine's work, and never less than N = 2^18. CHATVAULT_SCRYPT_WORK_FACTOR
(log2 N, 1..=22) sets it instead: for tests only, a low one weakens the
passphrase.

Vaults: `chatvault init URL [--vault NAME]` remembers a vault in config.json
under the platform's config directory (CHATVAULT_CONFIG_DIR overrides it);
later commands use the default vault, or --vault NAME, with no --server.

Logging: -v (debug) or -vv (trace), or RUST_LOG=chatvault=debug, print
tracing output on standard error.

Exit codes:
  0  success
  1  not found, conflict or another failure
  2  usage: bad arguments, bad input file, unknown vault name
  3  wrong key or not authorized (passphrase, identity, credentials)
  4  network: the server cannot be reached (writes stay queued)
  5  integrity: a record failed authentication or cannot be decoded
     (also `verify` finding any problem)
  6  local: this device's files (replica, config) cannot be used";

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

    /// Unlock with this age identity file (AGE-SECRET-KEY-…) instead of a
    /// passphrase; remembered for a vault `init` remembers
    #[arg(long, global = true, env = "CHATVAULT_IDENTITY", value_name = "FILE")]
    identity: Option<PathBuf>,

    /// Work from this device only: no pull, no push (writes stay queued)
    #[arg(long, global = true)]
    no_sync: bool,

    /// Use the vault `init` remembered under this name [default: the first one]
    #[arg(long, global = true, env = "CHATVAULT_VAULT", value_name = "NAME")]
    vault: Option<String>,

    /// Neither use nor start the unlock agent: every command asks for the
    /// passphrase (for scripts and tests)
    #[arg(
        long,
        global = true,
        env = agent::NO_AGENT_VAR,
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    no_agent: bool,

    /// Accept a new passphrase (creating a vault, `keys passwd`) that the
    /// strength estimate calls weak
    #[arg(
        long,
        global = true,
        env = "CHATVAULT_ALLOW_WEAK_PASSPHRASE",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    allow_weak_passphrase: bool,

    /// Seconds the agent keeps this unlock after its last use [default: 900]
    #[arg(long, global = true, env = agent::TIMEOUT_VAR, value_name = "SECONDS")]
    agent_timeout: Option<u64>,

    /// Seconds a command may spend, before it exits, on housekeeping its
    /// sync started (compacting the vault's change log when due); what does
    /// not fit is resumed by the next command
    #[arg(
        long,
        global = true,
        env = "CHATVAULT_MAINTENANCE_BUDGET",
        value_name = "SECONDS",
        default_value = "1.5",
        value_parser = parse_seconds
    )]
    maintenance_budget: std::time::Duration,

    /// More output on standard error: -v debug, -vv trace (or set RUST_LOG)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create (or open) the vault at URL and remember it for later commands
    Init {
        /// file:///folder, s3://bucket/prefix or supabase+https://project.supabase.co
        url: String,
        /// Stands in for the global --server, hidden here: `init` takes the
        /// URL as its argument (the same URL twice is accepted)
        #[arg(long, hide = true, value_name = "URL")]
        server: Option<String>,
        /// Create a new vault if the URL holds none, without asking (scripts;
        /// at a terminal `init` asks first)
        #[arg(long)]
        create: bool,
    },
    /// List chats (short id, starred, messages, last activity, title), newest
    /// first. The short id is the first 8 hex digits of the chat's id (more
    /// where two chats share them): any command taking a chat accepts it
    Ls {
        /// One JSON array of chats instead of lines
        #[arg(long)]
        json: bool,
        /// Print whole chat ids instead of short ones
        #[arg(long, short = 'l')]
        full_ids: bool,
    },
    /// Print a chat's messages in order, with their original times
    Show {
        /// The chat: its id, a unique prefix of it (4+ hex digits) or its exact title
        chat: String,
        /// The chat as chatvault JSON (the export schema) instead of text
        #[arg(long)]
        json: bool,
        /// Start at message number N (1-based, as `search` numbers its hits)
        #[arg(long, value_name = "N", conflicts_with = "json")]
        at: Option<usize>,
    },
    /// Create a chat and print its id
    New {
        /// Its title
        title: String,
    },
    /// Append a message to a chat and print its id
    Add {
        /// The chat: its id, a unique prefix of it (4+ hex digits) or its exact title
        chat: String,
        /// Who wrote it
        #[arg(long, value_enum, default_value_t = CliRole::User)]
        role: CliRole,
        /// The message text
        text: String,
    },
    /// Rename a chat
    Rename {
        /// The chat: its id, a unique prefix of it (4+ hex digits) or its exact title
        chat: String,
        /// The new title
        title: String,
    },
    /// Star a chat
    Star {
        /// The chat: its id, a unique prefix of it (4+ hex digits) or its exact title
        chat: String,
    },
    /// Unstar a chat
    Unstar {
        /// The chat: its id, a unique prefix of it (4+ hex digits) or its exact title
        chat: String,
    },
    /// Delete a chat on every device
    Rm {
        /// The chat: its id, a unique prefix of it (4+ hex digits) or its exact title
        chat: String,
    },
    /// Delete one message of a chat on every device
    RmMessage {
        /// The chat: its id, a unique prefix of it (4+ hex digits) or its exact title
        chat: String,
        /// The message's id (see `show`), or a unique prefix of it (4+ hex digits)
        message: String,
    },
    /// Sync once: pull every change, push every queued one
    Sync,
    /// Sync in the background and print events until Ctrl-C
    Watch(WatchArgs),
    /// Compact the vault now, whatever the backend's thresholds, and print
    /// what was removed (syncs run this by themselves when it is due)
    Maintain,
    /// Move a folder vault made by an earlier release (one shared log) to the
    /// per-device layout, which a folder that Syncthing, Dropbox or a NAS
    /// copies needs; run it once every device has this release (earlier
    /// releases stop at a moved folder with an error asking to upgrade)
    MigrateFolder,
    /// Write every chat as a standard age file (decrypt with `age -d`) or plain JSON
    Export(ExportArgs),
    /// Import a ChatGPT export (zip or conversations.json), a Claude export
    /// (conversations.json or zip) or a chatvault JSON export; importing the
    /// same file again adds nothing
    Import {
        /// The export file
        file: PathBuf,
        /// Also apply the deletions a chatvault export carries (deleted
        /// chats and messages); without it an import never deletes anything
        #[arg(long)]
        apply_deletions: bool,
    },
    /// Find chats whose title or messages contain TEXT (case-insensitive)
    Search {
        /// The text to look for
        text: String,
        /// Print whole chat ids instead of short ones
        #[arg(long, short = 'l')]
        full_ids: bool,
    },
    /// Check that the vault's key file opens and is this device's copy or a
    /// valid successor (not damaged, replaced or rolled back), and that every
    /// record on the server and on this device opens and both agree; exits 5
    /// if anything is wrong
    Verify,
    /// Show queued changes and the sync status (after a sync)
    Status,
    /// Manage what unlocks the vault: list, add-device, remove-device, passwd,
    /// recovery, rotate, reseal, retire, device-key (see `chatvault keys --help`)
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Sign in to a Supabase vault (email and password; the session is kept
    /// sealed in this device's replica and refreshes itself)
    Login(login::LoginArgs),
    /// Sign out of a Supabase vault: revoke the session and remove it
    Logout(login::LogoutArgs),
    /// Forget every cached unlock and stop the agent: the next command asks
    /// for the passphrase again
    Lock,
    /// Run the unlock agent on SOCKET (started by the commands themselves)
    #[command(hide = true)]
    Agent {
        /// The Unix socket to listen on
        #[arg(long)]
        socket: PathBuf,
    },
    /// Print a shell completion script (e.g. `chatvault completions bash > …`)
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
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

/// What `export` writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
enum ExportFormat {
    /// A standard age file of every chat (needs --passphrase-env or --recipient)
    #[default]
    Age,
    /// Plain chatvault JSON (unencrypted: handle with care)
    Json,
}

#[derive(Debug, Args)]
#[group(skip)]
#[command(group = ArgGroup::new("to").args(["passphrase_env", "recipient"]).multiple(true))]
struct ExportArgs {
    /// age: encrypted to a passphrase or recipients; json: plain chatvault JSON
    #[arg(long, value_enum, default_value_t = ExportFormat::Age)]
    format: ExportFormat,
    /// Encrypt to the passphrase held in this environment variable
    #[arg(long, value_name = "VAR")]
    passphrase_env: Option<String>,
    /// Encrypt to this age recipient (age1…); repeat for several
    #[arg(long, value_name = "AGE1…")]
    recipient: Vec<String>,
    /// Write here instead of standard output
    #[arg(short, long, visible_alias = "out", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Overwrite the --output file if it exists
    #[arg(long, short)]
    force: bool,
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

/// A non-negative number of seconds, fractions allowed.
fn parse_seconds(text: &str) -> Result<std::time::Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    std::time::Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("{text:?} is not a non-negative number of seconds"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Agent { socket } = &cli.command {
        // Its own small runtime, no tracing: it has no terminal.
        return match agent::server::run(socket) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::from(exit::LOCAL),
        };
    }
    exit::init_tracing(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::LOCAL);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::error(&e);
            ExitCode::from(exit::code(&e))
        }
    }
}
