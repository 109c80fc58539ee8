//! Two devices edit the same chat while offline, then sync: both end up
//! with every message, in the same order, and neither edit is lost.
//!
//! ```text
//! cargo run --example two_devices
//! ```

use chatvault::{Chat, ChatVault, DynStorage, Role, SyncStatus};
use chatvault_conformance::layers::{Fault, FaultyStorage};
use std::path::Path;
use std::sync::Arc;

const PASSPHRASE: &str = "two devices, one vault";

/// A device whose network can be switched off, for the demonstration.
struct Device {
    name: &'static str,
    vault: ChatVault,
    network: Arc<FaultyStorage>,
}

impl Device {
    async fn open(name: &'static str, server: &Path, dir: &Path) -> chatvault::Result<Self> {
        let client = chatvault_fs::open(server)?;
        let network = FaultyStorage::new(Arc::new(client));
        let storage: DynStorage = network.clone();
        let vault = ChatVault::builder()
            .storage(storage)
            .replica_path(dir.join(format!("{name}.redb")))
            .passphrase(PASSPHRASE)
            .scrypt_work_factor(12)
            .open()
            .await?;
        Ok(Self {
            name,
            vault,
            network,
        })
    }

    fn go_offline(&self) {
        self.network.fail_all(Fault::Unavailable);
    }

    fn go_online(&self) {
        self.network.heal();
    }

    fn show(&self, chat: &Chat) {
        println!("   {} sees \"{}\":", self.name, chat.title());
        for message in chat.messages() {
            println!("     {:?}: {}", message.role(), message.content());
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let scratch = tempfile::tempdir()?;
    let server = scratch.path().join("server");

    println!("1. The laptop starts a chat and syncs; the phone loads it");
    let laptop = Device::open("laptop", &server, scratch.path()).await?;
    let chat = laptop.vault.new_chat("Weekend plans").await?;
    laptop
        .vault
        .add_message(chat.id, Role::User, "Hike on Saturday?")
        .await?;
    laptop.vault.sync_now().await?;
    let phone = Device::open("phone", &server, scratch.path()).await?;
    phone.vault.load_sidebar().await?;
    phone.show(&*phone.vault.load_full_chat(chat.id).await?);

    println!("2. Both go offline and edit the same chat");
    laptop.go_offline();
    phone.go_offline();
    laptop
        .vault
        .add_message(
            chat.id,
            Role::Assistant,
            "The forecast is sunny on Saturday.",
        )
        .await?;
    laptop
        .vault
        .add_message(chat.id, Role::User, "Then let's leave at 8.")
        .await?;
    phone
        .vault
        .add_message(chat.id, Role::User, "Can we bring the dog?")
        .await?;
    phone.vault.rename(chat.id, "Weekend hike").await?;
    for device in [&laptop, &phone] {
        let failed = device.vault.sync_now().await.is_err();
        println!(
            "   {}: sync failed = {failed}, status {:?}, {} chat(s) queued",
            device.name,
            device.vault.status(),
            device.vault.pending_changes()?
        );
        device.show(&*device.vault.load_full_chat(chat.id).await?);
    }

    println!("3. Both come back online and sync");
    laptop.go_online();
    phone.go_online();
    for device in [&laptop, &phone, &laptop] {
        let report = device.vault.sync_now().await?;
        println!(
            "   {} synced: pulled {}, pushed {}, merged {} conflict(s)",
            device.name, report.pulled, report.pushed, report.conflicts_resolved
        );
    }

    println!("4. Both show every message");
    let on_laptop = laptop.vault.load_full_chat(chat.id).await?;
    let on_phone = phone.vault.load_full_chat(chat.id).await?;
    laptop.show(&on_laptop);
    phone.show(&on_phone);
    assert_eq!(on_laptop, on_phone, "the devices converged");
    assert_eq!(on_laptop.message_count(), 4, "no message was lost");
    assert_eq!(laptop.vault.status(), SyncStatus::Synced);
    println!(
        "   both devices hold the same {} messages",
        on_laptop.message_count()
    );
    Ok(())
}
