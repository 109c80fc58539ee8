//! Quickstart: an encrypted chat vault in a local folder, synced to a
//! second device. Needs no configuration: everything lives in a temporary
//! folder that is removed at the end.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! 1. The laptop creates a vault protected by a passphrase and saves chats.
//! 2. It shows the sidebar and opens a chat.
//! 3. It syncs; a phone unlocks the same vault with the passphrase and shows
//!    its view.
//! 4. It lists what the "server" folder holds, and checks that no title or
//!    message appears in it in plain text.

use chatvault::{ChatVault, Role, Sidebar};
use std::path::{Path, PathBuf};

const PASSPHRASE: &str = "correct horse battery staple";

/// scrypt work factor for the key file. Apps leave it at age's default
/// (about a second per unlock in a release build); the example lowers it so
/// a debug build stays quick.
const WORK_FACTOR: u8 = 12;

fn print_sidebar(device: &str, sidebar: &Sidebar) {
    println!("   {device} sidebar:");
    for chat in sidebar {
        println!(
            "     {} {:<28} {} message(s)",
            if chat.starred { "★" } else { " " },
            chat.title,
            chat.message_count
        );
    }
}

fn files_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(files_under(&path)?);
        } else {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let scratch = tempfile::tempdir()?;
    let server_dir = scratch.path().join("server");
    let server = format!("file://{}", server_dir.display());

    println!("1. The laptop creates a vault in {}", server_dir.display());
    let laptop = ChatVault::builder()
        .storage_url(&server)
        .replica_path(scratch.path().join("laptop.redb"))
        .passphrase(PASSPHRASE)
        .scrypt_work_factor(WORK_FACTOR)
        .open()
        .await?;

    let trip = laptop.new_chat("Trip to Lisbon").await?;
    laptop
        .add_message(
            trip.id,
            Role::User,
            "Which neighbourhood should we stay in?",
        )
        .await?;
    laptop
        .add_message(
            trip.id,
            Role::Assistant,
            "Alfama for the views, Príncipe Real for quiet evenings.",
        )
        .await?;
    laptop.star(trip.id, true).await?;

    let recipes = laptop.new_chat("Sourdough starter").await?;
    laptop
        .add_message(recipes.id, Role::User, "How often do I feed it?")
        .await?;
    laptop
        .add_message(
            recipes.id,
            Role::Assistant,
            "Once a day at room temperature.",
        )
        .await?;
    laptop.rename(recipes.id, "Sourdough starter care").await?;

    let taxes = laptop.new_chat("Tax return questions").await?;
    laptop
        .add_message(taxes.id, Role::User, "Can I deduct my home office?")
        .await?;

    println!("2. What the laptop shows");
    print_sidebar("laptop", &laptop.sidebar());
    let opened = laptop.load_full_chat(trip.id).await?;
    println!("   opening \"{}\":", opened.title());
    for message in opened.messages() {
        println!("     {:?}: {}", message.role(), message.content());
    }

    println!("3. Sync, then a phone unlocks the vault with the passphrase");
    let report = laptop.sync_now().await?;
    println!("   laptop pushed {} chat(s)", report.pushed);
    let phone = ChatVault::builder()
        .storage_url(&server)
        .replica_path(scratch.path().join("phone.redb"))
        .passphrase(PASSPHRASE)
        .open()
        .await?;
    let sidebar = phone.load_sidebar().await?;
    print_sidebar("phone", &sidebar);
    let on_phone = phone.load_full_chat(recipes.id).await?;
    println!("   the phone opens \"{}\":", on_phone.title());
    for message in on_phone.messages() {
        println!("     {:?}: {}", message.role(), message.content());
    }
    assert_eq!(sidebar.len(), 3, "the phone sees every chat");

    println!("4. What the server folder holds");
    let secrets: Vec<String> = laptop
        .sidebar()
        .iter()
        .map(|c| c.title.clone())
        .chain(
            ["Alfama", "sourdough", "home office", "neighbourhood"]
                .iter()
                .map(|s| s.to_string()),
        )
        .collect();
    let files = files_under(&server_dir)?;
    for file in &files {
        let bytes = std::fs::read(file)?;
        let leaked: Vec<&String> = secrets
            .iter()
            .filter(|s| {
                let needle = s.to_lowercase().into_bytes();
                bytes
                    .to_ascii_lowercase()
                    .windows(needle.len())
                    .any(|w| w == needle.as_slice())
            })
            .collect();
        println!(
            "   {:<82} {:>6} bytes  {}",
            file.strip_prefix(&server_dir)?.display(),
            bytes.len(),
            if leaked.is_empty() {
                "ciphertext only".to_string()
            } else {
                format!("PLAINTEXT: {leaked:?}")
            }
        );
        assert!(leaked.is_empty(), "{} leaks {leaked:?}", file.display());
    }
    println!(
        "   {} file(s); none contains a title or message in plain text",
        files.len()
    );
    Ok(())
}
