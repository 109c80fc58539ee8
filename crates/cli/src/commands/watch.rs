//! `watch`: background sync, one printed line per event, until Ctrl-C,
//! `--for` seconds or `--count` chat events. The sync status is printed
//! when it changes (synced, offline, an error), not at every poll: each
//! round passes through `syncing`, which is left out.

use super::Session;
use crate::output;
use chatvault::{ChatId, ChatVault, Event, Result, SyncStatus};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// `watch`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
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

/// Watches until stopped, then stops background sync after its round.
pub async fn exec(session: &Session, args: &Args) -> Result<()> {
    run(&session.vault, args).await
}

async fn run(vault: &ChatVault, args: &Args) -> Result<()> {
    // Subscribed before sync starts, so the first round's events show.
    let mut events = vault.changes();
    vault.start_sync(Duration::from_secs(args.interval.max(1)))?;
    let deadline = async {
        match args.duration {
            Some(seconds) => tokio::time::sleep(Duration::from_secs(seconds)).await,
            None => std::future::pending().await,
        }
    };
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(deadline, ctrl_c);
    let mut chat_events = 0;
    let mut shown_status: Option<SyncStatus> = None;
    loop {
        tokio::select! {
            () = &mut deadline => break,
            // Without signal support the branch disables itself.
            Ok(()) = &mut ctrl_c => break,
            event = events.recv() => match event {
                Ok(Event::SyncStatus(SyncStatus::Syncing)) => {}
                Ok(Event::SyncStatus(status)) if shown_status.as_ref() == Some(&status) => {}
                Ok(event) => {
                    if let Event::SyncStatus(status) = &event {
                        shown_status = Some(status.clone());
                    }
                    let title = match &event {
                        Event::ChatUpserted(id) => title(vault, *id),
                        _ => None,
                    };
                    output::event(&event, title.as_deref());
                    if matches!(event, Event::ChatUpserted(_) | Event::ChatDeleted(_)) {
                        chat_events += 1;
                        if args.count.is_some_and(|n| chat_events >= n) {
                            break;
                        }
                    }
                }
                Err(RecvError::Lagged(n)) => eprintln!("warning: {n} events were missed; run `ls`"),
                Err(RecvError::Closed) => break,
            },
        }
    }
    vault.stop_sync().await;
    Ok(())
}

fn title(vault: &ChatVault, chat: ChatId) -> Option<String> {
    vault
        .sidebar()
        .into_iter()
        .find(|c| c.id == chat)
        .map(|c| c.title.clone())
}
