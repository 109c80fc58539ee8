//! `chatvault`: end-to-end encrypted chats from the terminal, over the
//! `chatvault` facade. Every command opens the vault, does its work, syncs
//! and exits; an error prints one line saying what to do and exits with
//! the code of its class ([`exit`]).

mod agent;
mod commands;
mod config;
mod exit;
mod ids;
mod output;
mod settings;
mod terminal;
mod unlock;

use chatvault::Result;
use clap::{Parser, Subcommand};
use commands::keys::KeysCommand;
use commands::*;
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
#[derive(Clone, Debug, Parser)]
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

/// The commands: one module of [`commands`] each, with its arguments and
/// its `exec`.
#[derive(Clone, Debug, Subcommand)]
enum Command {
    /// Create (or open) the vault at URL and remember it for later commands
    Init(init::Args),
    /// List chats (short id, starred, messages, last activity, title), newest
    /// first. The short id is the first 8 hex digits of the chat's id (more
    /// where two chats share them): any command taking a chat accepts it
    Ls(ls::Args),
    /// Print a chat's messages in order (the branch shown; --all for every
    /// branch), with their original times
    Show(show::Args),
    /// Create a chat and print its id
    New(new::Args),
    /// Append a message to a chat and print its id
    Add(add::Args),
    /// Attach files to a chat: send one message carrying them (uploaded by
    /// the sync before the message) and print its id and the files
    Attach(attach::Args),
    /// List the files a chat's messages carry (message id, size, media type,
    /// blob id, name); their bytes stay on the server until saved
    Attachments(attachments::Args),
    /// Write a file a chat's message carries (fetched and verified) to disk
    /// (also `get CHAT ATTACHMENT -o FILE`)
    #[command(visible_alias = "get")]
    SaveAttachment(save_attachment::Args),
    /// Rename a chat
    Rename(rename::Args),
    /// Star a chat
    Star(star::Args),
    /// Unstar a chat
    Unstar(star::Args),
    /// Delete a chat on every device
    Rm(rm::Args),
    /// Delete one message of a chat on every device
    RmMessage(rm_message::Args),
    /// Show the branch of a chat that goes through a message (one of the
    /// alternatives `show` marks [2/3]) on every device
    Select(select::Args),
    /// Sync once: pull every change, push every queued one
    Sync,
    /// Sync in the background and print events until Ctrl-C
    Watch(watch::Args),
    /// Compact the vault now, whatever the backend's thresholds, and print
    /// what was removed (syncs run this by themselves when it is due)
    Maintain,
    /// Move a folder vault made by an earlier release (one shared log) to the
    /// per-device layout, which a folder that Syncthing, Dropbox or a NAS
    /// copies needs; run it once every device has this release (earlier
    /// releases stop at a moved folder with an error asking to upgrade)
    MigrateFolder,
    /// Write every chat as a standard age file (decrypt with `age -d`) or plain JSON
    Export(export::Args),
    /// Import a ChatGPT export (zip or conversations.json), a Claude export
    /// (conversations.json or zip) or a chatvault JSON export; importing the
    /// same file again adds nothing
    Import(import::Args),
    /// Find chats whose title or messages contain TEXT (case-insensitive)
    Search(search::Args),
    /// Check that the vault's key file opens and is this device's copy or a
    /// valid successor (not damaged, replaced or rolled back), and that every
    /// record on the server and on this device opens and both agree; exits 5
    /// if anything is wrong
    Verify,
    /// Show queued changes and the sync status (after a sync)
    Status,
    /// Manage what unlocks the vault: list, add-device, remove-device, passwd,
    /// recovery, rotate, reseal, retire, upgrade, device-key (see `chatvault keys --help`)
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Sign in to a Supabase vault (email and password; the session is kept
    /// sealed in this device's replica and refreshes itself)
    Login(login::Args),
    /// Sign out of a Supabase vault: revoke the session and remove it
    Logout(logout::Args),
    /// Forget every cached unlock and stop the agent: the next command asks
    /// for the passphrase again
    Lock,
    /// Run the unlock agent on SOCKET (started by the commands themselves)
    #[command(hide = true)]
    Agent(commands::agent::Args),
    /// Print a shell completion script (e.g. `chatvault completions bash > …`)
    Completions(completions::Args),
}

/// Runs one command line: the one dispatch. Each command says what it
/// needs: nothing (completions, lock, device-key), where the vault is
/// (verify, login, logout) or the open vault ([`commands::with_vault`]:
/// opened, synced as the command asks, housekeeping settled, closed).
async fn run(cli: Cli) -> Result<()> {
    let location = || settings::location(&cli, None);
    // `on_vault!(s => expr)`: `expr` run on the open vault `s`.
    macro_rules! on_vault {
        ($session:ident => $exec:expr) => {
            with_vault(&cli, location()?, async |$session| $exec.await).await
        };
    }
    match &cli.command {
        Command::Completions(args) => completions::exec(args),
        Command::Lock => lock::exec().await,
        // Run by `main` before any runtime starts.
        Command::Agent(_) => Ok(()),
        Command::Keys(KeysCommand::DeviceKey { file }) => keys::write_device_key(file),
        Command::Init(args) => init::exec(&cli, args).await,
        // Checks the key file itself, so it must not open the vault first.
        Command::Verify => verify::exec(&location()?).await,
        Command::Login(args) => login::exec(&cli, &location()?, args).await,
        Command::Logout(args) => logout::exec(&cli, &location()?, args).await,
        Command::Ls(args) => on_vault!(s => ls::exec(s, args)),
        Command::Show(args) => on_vault!(s => show::exec(s, args)),
        Command::New(args) => on_vault!(s => new::exec(s, args)),
        Command::Add(args) => on_vault!(s => add::exec(s, args)),
        Command::Attach(args) => on_vault!(s => attach::exec(s, args)),
        Command::Attachments(args) => on_vault!(s => attachments::exec(s, args)),
        Command::SaveAttachment(args) => on_vault!(s => save_attachment::exec(s, args)),
        Command::Rename(args) => on_vault!(s => rename::exec(s, args)),
        Command::Star(args) => on_vault!(s => star::exec(s, args, true)),
        Command::Unstar(args) => on_vault!(s => star::exec(s, args, false)),
        Command::Rm(args) => on_vault!(s => rm::exec(s, args)),
        Command::RmMessage(args) => on_vault!(s => rm_message::exec(s, args)),
        Command::Select(args) => on_vault!(s => select::exec(s, args)),
        Command::Sync => on_vault!(s => sync::exec(s)),
        Command::Watch(args) => on_vault!(s => watch::exec(s, args)),
        Command::Maintain => on_vault!(s => maintain::exec(s)),
        Command::MigrateFolder => on_vault!(s => migrate_folder::exec(s)),
        Command::Export(args) => on_vault!(s => export::exec(s, args)),
        Command::Import(args) => on_vault!(s => import::exec(s, args)),
        Command::Search(args) => on_vault!(s => search::exec(s, args)),
        Command::Status => on_vault!(s => status::exec(s)),
        Command::Keys(command) => {
            on_vault!(s => keys::exec(s, command, cli.allow_weak_passphrase))
        }
    }
}

/// A non-negative number of seconds, fractions allowed.
fn parse_seconds(text: &str) -> std::result::Result<std::time::Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    std::time::Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("{text:?} is not a non-negative number of seconds"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Agent(args) = &cli.command {
        // Its own small runtime, no tracing: it has no terminal.
        return commands::agent::exec(args);
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
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::error(&e);
            ExitCode::from(exit::code(&e))
        }
    }
}
