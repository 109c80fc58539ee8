//! `chatvault logout`: revokes a `supabase+https://` vault's Supabase
//! session on the server and removes it from this device.

use super::login::supabase_only;
use crate::settings::Location;
use crate::Cli;
use chatvault::{Error, Result};

/// `logout`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// End every session of the account, on every device (default: this one)
    #[arg(long)]
    everywhere: bool,
}

/// Revokes the stored session and removes it. A session the server
/// already ended is reported, not an error.
#[cfg(feature = "supabase")]
pub async fn exec(_: &Cli, location: &Location, args: &Args) -> Result<()> {
    use chatvault::supabase::SignOutScope;
    supabase_only(location)?;
    let vault = match crate::settings::builder(location)?.open().await {
        Ok(vault) => vault,
        Err(Error::Unauthorized { message }) => {
            crate::output::out!("not signed in to {} ({message})", location.server);
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let scope = if args.everywhere {
        SignOutScope::Global
    } else {
        SignOutScope::Local
    };
    let result = vault.sign_out(scope).await;
    vault.close().await;
    result?;
    crate::output::out!(
        "signed out of {}{}",
        location.server,
        if args.everywhere {
            " on every device"
        } else {
            ""
        }
    );
    Ok(())
}

/// Without the `supabase` feature there is nothing to sign out of.
#[cfg(not(feature = "supabase"))]
pub async fn exec(_: &Cli, location: &Location, _: &Args) -> Result<()> {
    supabase_only(location)?;
    Err(Error::invalid(
        "this chatvault was built without Supabase support (Cargo feature `supabase`)",
    ))
}
