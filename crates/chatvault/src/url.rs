//! [`open_url`]: pick a backend at run time from a URL.

use chatvault_core::{DeviceId, DynStorage, Error, Result};

/// The backends `open_url` knows, by URL scheme, and the Cargo feature each
/// needs.
const SCHEMES: &[(&str, &str)] = &[
    ("file://", "fs"),
    ("s3://", "s3"),
    ("supabase+https://", "supabase"),
    ("supabase+http://", "supabase"),
];

#[cfg(not(all(feature = "fs", feature = "s3", feature = "supabase")))]
fn feature_disabled(url: &str, feature: &str) -> Error {
    Error::invalid(format!(
        "{url:?} needs the `{feature}` backend, which this build of chatvault leaves out; \
         enable the Cargo feature `{feature}` of the `chatvault` crate"
    ))
}

/// Opens the backend a URL names:
///
/// | URL | backend | Cargo feature |
/// |---|---|---|
/// | `file:///path/to/folder` | a local (or synced) folder | `fs` (default) |
/// | `s3://bucket/prefix` | S3 or an S3-compatible store; credentials, region and endpoint from the usual `AWS_*` environment | `s3` |
/// | `supabase+https://project.supabase.co` | Supabase; the anon key from `SUPABASE_ANON_KEY`, and either a static access token from `SUPABASE_ACCESS_TOKEN` or a sign-in with `CHATVAULT_SUPABASE_EMAIL` and `CHATVAULT_SUPABASE_PASSWORD` (a session that refreshes itself) | `supabase` |
///
/// `supabase+http://` (no TLS) is accepted only for a project on this
/// machine (`localhost`, 127.0.0.0/8, `::1`): anywhere else it would send
/// the tokens in the clear, and fails with [`Error::InvalidInput`].
///
/// A URL whose backend's feature is off fails with [`Error::InvalidInput`]
/// naming the feature to enable; so does an unknown scheme. Opened through
/// [`ChatVaultBuilder::storage_url`](crate::ChatVaultBuilder::storage_url)
/// instead, a Supabase session is also kept (sealed) in the vault's replica,
/// so later runs need no password: see
/// [`ChatVaultBuilder::supabase_sign_in`](crate::ChatVaultBuilder::supabase_sign_in).
///
/// A folder opened this way writes as a random device of the folder's
/// per-device layout; [`open_url_as`] names the device.
pub async fn open_url(url: &str) -> Result<DynStorage> {
    open_url_as(url, DeviceId::random()).await
}

/// [`open_url`] for the device `device`: in a `file://` folder with the
/// per-device layout, this device writes only under its own directory
/// (`dev/<device id>/`). Pass the same id each time the device opens the
/// vault ([`ChatVault::device_id`](crate::ChatVault::device_id)); the
/// builder does.
pub async fn open_url_as(url: &str, device: DeviceId) -> Result<DynStorage> {
    let Some(&(_, feature)) = SCHEMES.iter().find(|(scheme, _)| url.starts_with(scheme)) else {
        return Err(Error::invalid(format!(
            "unsupported storage URL {url:?}: expected file:///path, s3://bucket/prefix \
             or supabase+https://project.supabase.co"
        )));
    };
    match feature {
        "fs" => open_fs(url, device).await,
        "s3" => open_s3(url).await,
        _ => open_supabase(url).await,
    }
}

#[cfg(feature = "fs")]
async fn open_fs(url: &str, device: DeviceId) -> Result<DynStorage> {
    let url = url.to_string();
    // Creating the folder is file-system work: keep it off the runtime.
    let storage = crate::task::blocking(move || {
        chatvault_fs::FsStorageBuilder::from_url(&url)?
            .writer(chatvault_fs::WriterId(device.0))
            .open()
    })
    .await?;
    Ok(std::sync::Arc::new(storage))
}

#[cfg(not(feature = "fs"))]
async fn open_fs(url: &str, _device: DeviceId) -> Result<DynStorage> {
    Err(feature_disabled(url, "fs"))
}

#[cfg(feature = "s3")]
async fn open_s3(url: &str) -> Result<DynStorage> {
    let storage = chatvault_s3::open_url(url)?;
    Ok(std::sync::Arc::new(storage))
}

#[cfg(not(feature = "s3"))]
async fn open_s3(url: &str) -> Result<DynStorage> {
    Err(feature_disabled(url, "s3"))
}

#[cfg(feature = "supabase")]
async fn open_supabase(url: &str) -> Result<DynStorage> {
    // No replica here: a session signed in from the environment lives in
    // memory for this process only.
    let (storage, _) = crate::supabase_session::open(url, None, None, Default::default()).await?;
    Ok(storage)
}

#[cfg(not(feature = "supabase"))]
async fn open_supabase(url: &str) -> Result<DynStorage> {
    Err(feature_disabled(url, "supabase"))
}

/// Moves the folder vault a `file://` URL names from the shared log of
/// releases before the per-device layout to that layout, writing as
/// `device` (give this device's id,
/// [`ChatVault::device_id`](crate::ChatVault::device_id)). Crash-safe; run
/// it again if it stops. See `chatvault_fs::FsStorageBuilder::migrate_to_per_device`.
///
/// Errors: [`Error::InvalidInput`] for a URL that is not `file://` or a
/// folder without a shared-log vault.
#[cfg(feature = "fs")]
pub async fn migrate_folder(url: &str, device: DeviceId) -> Result<chatvault_fs::MigrationReport> {
    if !url.starts_with("file://") {
        return Err(Error::invalid(format!(
            "only folder vaults (file://) have a layout to move, not {url:?}"
        )));
    }
    chatvault_fs::FsStorageBuilder::from_url(url)?
        .writer(chatvault_fs::WriterId(device.0))
        .migrate_to_per_device()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_schemes_are_invalid_input() {
        let err = open_url("ftp://example.com/chats")
            .await
            .expect_err("ftp is not a backend");
        assert!(
            matches!(err, Error::InvalidInput { ref message } if message.contains("unsupported storage URL")),
            "{err}"
        );
    }

    #[cfg(not(feature = "s3"))]
    #[tokio::test]
    async fn an_s3_url_without_the_s3_feature_names_the_feature() {
        let err = open_url("s3://bucket/prefix").await.expect_err("s3 is off");
        assert!(
            matches!(err, Error::InvalidInput { ref message } if message.contains("Cargo feature `s3`")),
            "{err}"
        );
    }

    #[cfg(not(feature = "supabase"))]
    #[tokio::test]
    async fn a_supabase_url_without_the_supabase_feature_names_the_feature() {
        let err = open_url("supabase+https://abcd.supabase.co")
            .await
            .expect_err("supabase is off");
        assert!(
            matches!(err, Error::InvalidInput { ref message } if message.contains("Cargo feature `supabase`")),
            "{err}"
        );
    }
}
