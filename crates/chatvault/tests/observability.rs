//! Sync rounds are observable: a `tracing` span per round, pull, push,
//! conflict resolution and maintenance, each recording its counts as
//! fields, and the same counts in the round's `SyncReport`.

use chatvault::{ChatVault, DynStorage, Role};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A closed span as seen by the subscriber: its name and every field
/// recorded on it, rendered as text.
#[derive(Clone, Debug)]
struct SeenSpan {
    name: &'static str,
    fields: BTreeMap<&'static str, String>,
}

impl SeenSpan {
    fn number(&self, field: &str) -> u64 {
        self.fields
            .get(field)
            .unwrap_or_else(|| panic!("span {} has no field {field}: {:?}", self.name, self.fields))
            .parse()
            .unwrap_or_else(|_| panic!("span {} field {field} is not a number", self.name))
    }
}

struct Fields<'a>(&'a mut BTreeMap<&'static str, String>);

impl Visit for Fields<'_> {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name(), value.to_string());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name(), value.to_string());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name(), value.to_string());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name(), value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
}

/// Collects every span of the engine, with its fields, when it closes.
#[derive(Clone, Default)]
struct Spans {
    open: Arc<Mutex<BTreeMap<u64, SeenSpan>>>,
    closed: Arc<Mutex<Vec<SeenSpan>>>,
}

impl Spans {
    fn named(&self, name: &str) -> Vec<SeenSpan> {
        self.closed
            .lock()
            .expect("spans")
            .iter()
            .filter(|s| s.name == name)
            .cloned()
            .collect()
    }

    fn clear(&self) {
        self.closed.lock().expect("spans").clear();
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        self.open.lock().expect("spans").insert(
            id.into_u64(),
            SeenSpan {
                name: attrs.metadata().name(),
                fields,
            },
        );
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some(span) = self.open.lock().expect("spans").get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut span.fields));
        }
    }

    fn on_close(&self, id: Id, _: Context<'_, S>) {
        if let Some(span) = self.open.lock().expect("spans").remove(&id.into_u64()) {
            self.closed.lock().expect("spans").push(span);
        }
    }
}

async fn device(server: &Path, replica: &Path) -> ChatVault {
    let storage: DynStorage =
        Arc::new(chatvault_fs::open(server).expect("open the folder backend"));
    ChatVault::builder()
        .storage(storage)
        .replica_path(replica)
        .passphrase("observability tests")
        .scrypt_work_factor(4)
        .open()
        .await
        .expect("open the vault")
}

#[tokio::test(flavor = "current_thread")]
async fn rounds_pulls_pushes_conflicts_and_maintenance_are_spans_with_counts() {
    let spans = Spans::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let dir = tempfile::tempdir().expect("tempdir");
    let server = dir.path().join("server");
    let a = device(&server, &dir.path().join("a.redb")).await;
    let chat = a.new_chat("Observed").await.expect("new chat");
    a.add_message(chat.id, Role::User, "hello")
        .await
        .expect("add");
    let pushed = a.sync_now().await.expect("sync a");
    assert_eq!(pushed.pushed, 1);
    assert!(
        pushed.bytes_pushed > 0 && pushed.requests >= 2,
        "{pushed:?}"
    );

    let round = spans.named("sync_round").pop().expect("a sync_round span");
    assert_eq!(round.number("pushed"), 1);
    assert_eq!(round.number("requests"), pushed.requests);
    let push = spans.named("push").pop().expect("a push span");
    assert_eq!(push.number("pushed"), 1);
    assert_eq!(push.number("bytes"), pushed.bytes_pushed);
    let pull = spans.named("pull").pop().expect("a pull span");
    assert!(pull.number("pages") >= 1 && pull.number("requests") >= 1);

    // b reads the chat in full, then both edit it: b's push conflicts.
    let b = device(&server, &dir.path().join("b.redb")).await;
    spans.clear();
    let pulled = b.sync_now().await.expect("sync b");
    assert_eq!(pulled.pulled, 1);
    assert!(pulled.bytes_pulled > 0, "{pulled:?}");
    let pull = spans.named("pull").pop().expect("b's pull span");
    assert_eq!(pull.number("pulled"), 1);
    assert_eq!(pull.number("bytes"), pulled.bytes_pulled);
    b.load_full_chat(chat.id).await.expect("load on b");
    a.add_message(chat.id, Role::Assistant, "from a")
        .await
        .expect("add on a");
    a.sync_now().await.expect("push a");
    b.add_message(chat.id, Role::User, "from b")
        .await
        .expect("add on b");
    spans.clear();
    // Push only: b has not pulled a's change, so its put must conflict.
    let report = b.engine().push().await.expect("push b");
    assert_eq!(report.conflicts_resolved, 1, "{report:?}");
    let resolved = spans
        .named("resolve_conflicts")
        .pop()
        .expect("a resolve_conflicts span");
    assert_eq!(resolved.number("chats"), 1);
    assert_eq!(resolved.number("merged"), 1);
    assert_eq!(
        spans
            .named("push")
            .pop()
            .expect("push span")
            .number("conflicts_resolved"),
        1
    );

    spans.clear();
    let maintained = a.maintain(true).await.expect("maintain");
    let span = spans
        .named("maintenance")
        .pop()
        .expect("a maintenance span");
    assert_eq!(span.fields.get("ran").map(String::as_str), Some("true"));
    assert_eq!(span.number("requests"), maintained.requests);
    assert!(maintained.requests > 0);
    a.close().await;
    b.close().await;
}
