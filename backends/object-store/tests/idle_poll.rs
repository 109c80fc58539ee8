//! The cost of polling: an idle poll is one request whatever the vault size.

mod common;

use chatvault_core::{ChatId, Cursor, Part, PutPrecondition, Storage};
use common::{drain, memory, record, vault, Instrumented};

#[tokio::test]
async fn an_idle_poll_over_ten_thousand_records_is_one_request() {
    let inner = memory();
    let writer = vault(inner.clone());
    for _ in 0..10_000 {
        writer
            .put(record(ChatId::new(), 1), PutPrecondition::Absent)
            .await
            .unwrap();
    }
    let counted = Instrumented::new(inner.clone());
    let reader = vault(counted.clone());
    let (feed, head) = drain(&reader, &Cursor::start(), 1000).await;
    assert_eq!(feed.len(), 10_000);

    counted.reset();
    let idle = reader.changes(&head, 1000).await.unwrap();
    println!(
        "idle poll at 10k records: {} request(s)",
        counted.requests()
    );
    assert!(idle.changes.is_empty());
    assert_eq!(counted.requests(), 1);

    // k new commits: one LIST plus the k entries; then the bodies with one
    // LIST running alongside the blob reads.
    let changed: Vec<ChatId> = feed.iter().take(5).map(|c| c.chat).collect();
    for &chat in &changed {
        writer
            .put(record(chat, 2), PutPrecondition::Version(1))
            .await
            .unwrap();
    }
    counted.reset();
    let page = reader.changes(&head, 1000).await.unwrap();
    println!("poll with 5 changes: {} request(s)", counted.requests());
    assert_eq!(page.changes.len(), 5);
    assert_eq!(counted.requests(), 1 + 5);
    counted.reset();
    let records = reader.get(&changed, Part::Full).await.unwrap();
    println!("get of 5 changed chats: {} request(s)", counted.requests());
    assert_eq!(records.len(), 5);
    assert_eq!((counted.requests(), counted.lists()), (1 + 5, 1));
}
