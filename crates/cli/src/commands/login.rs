//! `chatvault login`: a Supabase session for a `supabase+https://` vault.
//! `login` signs in with email and password and the library keeps the
//! session sealed in this device's replica, so later commands sync with no
//! password and no token (it refreshes itself); `logout` revokes it on the
//! server and removes it.

use crate::settings::Location;
use crate::Cli;
use chatvault::{Error, Result};

/// `login`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The account's email [default: CHATVAULT_SUPABASE_EMAIL]
    #[arg(long)]
    email: Option<String>,
}

pub(super) fn supabase_only(location: &Location) -> Result<()> {
    if location.server.starts_with("supabase+") {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{} needs no sign-in: login and logout are for Supabase vaults (supabase+https://…)",
            location.server
        )))
    }
}

/// Signs in (replacing a stored session), syncs once and says who is
/// signed in. The password comes from CHATVAULT_SUPABASE_PASSWORD, else one
/// line of standard input (read before the vault passphrase).
#[cfg(feature = "supabase")]
pub async fn exec(cli: &Cli, location: &Location, args: &Args) -> Result<()> {
    use chatvault::supabase::{EMAIL_VAR, PASSWORD_VAR};
    use std::io::BufRead;
    use zeroize::Zeroizing;
    supabase_only(location)?;
    let email = args
        .email
        .clone()
        .or_else(|| std::env::var(EMAIL_VAR).ok().filter(|e| !e.is_empty()))
        .ok_or_else(|| Error::invalid(format!("login needs an email: --email or {EMAIL_VAR}")))?;
    // Every copy of the password is wiped: this buffer when dropped, and
    // the String it is moved out into by the library's credentials.
    let mut password = match std::env::var(PASSWORD_VAR).ok().filter(|p| !p.is_empty()) {
        Some(password) => Zeroizing::new(password),
        None => {
            eprint!("Supabase password for {email} (shown as you type): ");
            let mut line = Zeroizing::new(String::new());
            std::io::stdin().lock().read_line(&mut line).map_err(|e| {
                crate::output::file_error("cannot read the password from standard input", e)
            })?;
            let len = line.trim_end_matches(['\r', '\n']).len();
            line.truncate(len);
            if line.is_empty() {
                return Err(Error::invalid(format!(
                    "no password: set {PASSWORD_VAR} or type it on standard input"
                )));
            }
            line
        }
    };
    let vault = crate::settings::builder(location)?
        .supabase_sign_in(&email, std::mem::take(&mut *password))
        .open()
        .await?;
    let synced = if cli.no_sync {
        Ok(())
    } else {
        vault.sync_now().await.map(|_| ())
    };
    let user = vault
        .supabase_session()
        .await
        .and_then(|session| session.user_id)
        .map(|id| format!(" (user {id})"))
        .unwrap_or_default();
    crate::output::out!(
        "signed in to {} as {email}{user}; the session is kept sealed in {}",
        location.server,
        location.replica.display()
    );
    vault.close().await;
    synced
}

/// Without the `supabase` feature there is nothing to sign in to.
#[cfg(not(feature = "supabase"))]
pub async fn exec(_: &Cli, location: &Location, _: &Args) -> Result<()> {
    supabase_only(location)?;
    Err(Error::invalid(
        "this chatvault was built without Supabase support (Cargo feature `supabase`)",
    ))
}
