use super::*;
use crate::storage::SealedRecord;
use redb::backends::FileBackend;
use redb::StorageBackend;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn record(chat: ChatId, version: u64, body: &[u8]) -> SealedRecord {
    SealedRecord {
        chat,
        version,
        deleted: false,
        summary: format!("summary v{version}").into_bytes().into(),
        body: Some(body.to_vec().into()),
    }
}

fn temp_replica() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested").join("replica.redb");
    (dir, path)
}

#[test]
fn a_local_write_and_its_outbox_entry_survive_reopening_together() {
    let (_dir, path) = temp_replica();
    let chat = ChatId::new();
    {
        let replica = Replica::open(&path).expect("open");
        let mut write = replica.write().expect("write");
        write
            .put_local(&record(chat, 1, b"body"), None)
            .expect("put");
        write.set_cursor(&Cursor("c-7".into())).expect("cursor");
        write.commit().expect("commit");
    }
    let replica = Replica::open(&path).expect("reopen");
    assert_eq!(
        replica.record(chat, true).expect("read"),
        Some(record(chat, 1, b"body"))
    );
    let outbox = replica.outbox().expect("outbox");
    assert_eq!(outbox.len(), 1);
    assert_eq!(
        (outbox[0].chat, outbox[0].base, outbox[0].version),
        (chat, None, 1)
    );
    assert_eq!(replica.cursor().expect("cursor"), Cursor("c-7".into()));
}

#[test]
fn a_write_dropped_before_commit_leaves_neither_record_nor_outbox_entry() {
    let (_dir, path) = temp_replica();
    let replica = Replica::open(&path).expect("open");
    let chat = ChatId::new();
    {
        let mut write = replica.write().expect("write");
        write
            .put_local(&record(chat, 1, b"body"), None)
            .expect("put");
    }
    assert_eq!(replica.record(chat, true).expect("read"), None);
    assert!(replica.outbox().expect("outbox").is_empty());
}

#[test]
fn pending_saves_of_one_chat_collapse_to_the_latest() {
    let (_dir, path) = temp_replica();
    let replica = Replica::open(&path).expect("open");
    let chat = ChatId::new();
    for version in 4..=6 {
        let mut write = replica.write().expect("write");
        write
            .put_local(&record(chat, version, b"b"), Some(3))
            .expect("put");
        write.commit().expect("commit");
    }
    let outbox = replica.outbox().expect("outbox");
    assert_eq!(outbox.len(), 1);
    assert_eq!((outbox[0].base, outbox[0].version), (Some(3), 6));
}

#[test]
fn confirming_an_older_push_rebases_the_newer_pending_entry() {
    let (_dir, path) = temp_replica();
    let replica = Replica::open(&path).expect("open");
    let chat = ChatId::new();
    let mut write = replica.write().expect("write");
    write
        .put_local(&record(chat, 2, b"b"), Some(1))
        .expect("put");
    write
        .put_local(&record(chat, 3, b"c"), Some(1))
        .expect("put");
    write.mark_pushed(chat, 2).expect("pushed");
    write.commit().expect("commit");
    let entry = replica
        .pending(chat)
        .expect("pending")
        .expect("still pending");
    assert_eq!((entry.base, entry.version), (Some(2), 3));

    let mut write = replica.write().expect("write");
    write.mark_pushed(chat, 3).expect("pushed");
    write.commit().expect("commit");
    assert_eq!(replica.pending(chat).expect("pending"), None);
    assert_eq!(replica.outbox_len().expect("len"), 0);
}

#[test]
fn a_summary_without_body_drops_the_stale_body_and_bodies_only_attach_to_their_version() {
    let (_dir, path) = temp_replica();
    let replica = Replica::open(&path).expect("open");
    let chat = ChatId::new();
    let mut write = replica.write().expect("write");
    write
        .put_remote(&record(chat, 1, b"old body"))
        .expect("put");
    let mut newer = record(chat, 2, b"");
    newer.body = None;
    write.put_remote(&newer).expect("put");
    assert!(!write.put_body(chat, 1, b"old body").expect("put body"));
    write.commit().expect("commit");
    assert!(!replica.has_body(chat).expect("has body"));
    assert_eq!(
        replica
            .record(chat, true)
            .expect("read")
            .and_then(|r| r.body),
        None
    );

    let mut write = replica.write().expect("write");
    assert!(write.put_body(chat, 2, b"new body").expect("put body"));
    write.commit().expect("commit");
    assert_eq!(
        replica
            .record(chat, true)
            .expect("read")
            .and_then(|r| r.body),
        Some(b"new body".to_vec().into())
    );
}

#[test]
fn records_reads_many_chats_in_the_order_asked_like_record_does_one() {
    let (_dir, path) = temp_replica();
    let replica = Replica::open(&path).expect("open");
    let (a, b, missing) = (ChatId::new(), ChatId::new(), ChatId::new());
    let mut write = replica.write().expect("write");
    write.put_remote(&record(a, 1, b"body of a")).expect("put");
    let mut summary_only = record(b, 3, b"");
    summary_only.body = None;
    write.put_remote(&summary_only).expect("put");
    write.commit().expect("commit");

    let asked = [b, missing, a];
    for with_body in [true, false] {
        let batch = replica.records(&asked, with_body).expect("records");
        let one_by_one: Vec<_> = asked
            .iter()
            .map(|&chat| replica.record(chat, with_body).expect("record"))
            .collect();
        assert_eq!(batch, one_by_one);
    }
    let batch = replica.records(&asked, true).expect("records");
    assert_eq!(
        batch[0].as_ref().map(|r| (r.version, r.body.is_none())),
        Some((3, true))
    );
    assert!(batch[1].is_none());
    assert_eq!(
        batch[2].as_ref().and_then(|r| r.body.clone()),
        Some(b"body of a".to_vec().into())
    );
}

#[test]
fn a_replica_from_a_newer_format_is_refused_with_a_typed_error() {
    let (_dir, path) = temp_replica();
    {
        let replica = Replica::open(&path).expect("open");
        let txn = replica.db.begin_write().expect("write");
        {
            let mut meta = txn.open_table(META).expect("meta");
            meta.insert(META_FORMAT, (REPLICA_FORMAT + 1).to_be_bytes().as_slice())
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
    let err = Replica::open(&path).expect_err("newer format must be refused");
    assert!(
        matches!(err, Error::UnsupportedFormat { found, supported: REPLICA_FORMAT, .. } if found == REPLICA_FORMAT + 1),
        "{err}"
    );
}

#[test]
fn a_corrupt_replica_file_is_a_local_error_and_is_left_untouched() {
    let (_dir, path) = temp_replica();
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let garbage: Vec<u8> = (0..16_384u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &garbage).expect("write garbage");
    let err = Replica::open(&path).expect_err("garbage must not open");
    assert!(matches!(err, Error::Local { .. }), "{err}");
    assert_eq!(std::fs::read(&path).expect("read back"), garbage);
}

#[test]
fn a_redb_file_of_another_application_is_refused() {
    let (_dir, path) = temp_replica();
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    {
        let db = redb::Database::create(&path).expect("create");
        let txn = db.begin_write().expect("write");
        {
            let table: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("theirs");
            txn.open_table(table)
                .expect("table")
                .insert("k", 1)
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
    let err = Replica::open(&path).expect_err("foreign file must be refused");
    assert!(
        matches!(err, Error::Local { ref message, .. } if message.contains("not a chatvault replica")),
        "{err}"
    );
}

#[test]
fn opening_a_replica_twice_is_a_local_error() {
    let (_dir, path) = temp_replica();
    let _first = Replica::open(&path).expect("open");
    let err = Replica::open(&path).expect_err("second open must fail");
    assert!(
        matches!(err, Error::Local { ref message, .. } if message.contains("already open")),
        "{err}"
    );
}

/// A file backend with a size limit: growing past it fails like a full disk.
#[derive(Debug)]
struct QuotaBackend {
    inner: FileBackend,
    quota: Arc<AtomicU64>,
}

impl QuotaBackend {
    fn full() -> io::Error {
        io::Error::new(io::ErrorKind::StorageFull, "no space left on device")
    }
}

impl StorageBackend for QuotaBackend {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.inner.read(offset, len)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        if len > self.quota.load(Ordering::SeqCst) && len > self.inner.len()? {
            return Err(Self::full());
        }
        self.inner.set_len(len)
    }
    fn sync_data(&self, eventual: bool) -> io::Result<()> {
        self.inner.sync_data(eventual)
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if offset + data.len() as u64 > self.quota.load(Ordering::SeqCst) {
            return Err(Self::full());
        }
        self.inner.write(offset, data)
    }
}

#[test]
fn a_full_disk_fails_the_write_with_a_local_error_and_keeps_the_last_commit() {
    let (_dir, path) = temp_replica();
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let kept = ChatId::new();
    let lost = ChatId::new();
    let quota = Arc::new(AtomicU64::new(u64::MAX));
    {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .expect("file");
        let backend = QuotaBackend {
            inner: FileBackend::new(file).expect("backend"),
            quota: quota.clone(),
        };
        let replica = Replica::open_with_backend(backend).expect("open");
        let mut write = replica.write().expect("write");
        write
            .put_local(&record(kept, 1, b"small"), None)
            .expect("put");
        write.commit().expect("commit");

        // The disk fills up: the file may not grow any further.
        quota.store(
            std::fs::metadata(&path).expect("meta").len(),
            Ordering::SeqCst,
        );
        let big = vec![7u8; 8 << 20];
        let result = replica.write().and_then(|mut write| {
            write.put_local(&record(lost, 1, &big), None)?;
            write.set_cursor(&Cursor("after".into()))?;
            write.commit()
        });
        let err = result.expect_err("a write past the quota must fail");
        assert!(
            matches!(err, Error::Local { ref message, .. } if message.contains("disk is full")),
            "{err}"
        );
    }
    let replica = Replica::open(&path).expect("reopen after the failure");
    assert_eq!(
        replica.record(kept, true).expect("read"),
        Some(record(kept, 1, b"small"))
    );
    assert_eq!(replica.record(lost, true).expect("read"), None);
    assert_eq!(replica.cursor().expect("cursor"), Cursor::start());
    let outbox: Vec<ChatId> = replica
        .outbox()
        .expect("outbox")
        .iter()
        .map(|e| e.chat)
        .collect();
    assert_eq!(outbox, vec![kept]);
}

#[test]
fn identity_and_key_file_round_trip() {
    let (_dir, path) = temp_replica();
    let replica = Replica::open(&path).expect("open");
    assert_eq!(replica.identity().expect("identity"), None);
    let vault = VaultId::new();
    let trust = crate::envelope::KeyTrust::of(&crate::envelope::EnvelopeCipher::generate(vault));
    let mut write = replica.write().expect("write");
    write.set_identity(vault, DeviceId(42)).expect("identity");
    write
        .set_key_file(b"age-encryption.org/v1...", &trust)
        .expect("key file");
    write.commit().expect("commit");
    assert_eq!(
        replica.identity().expect("identity"),
        Some((vault, DeviceId(42)))
    );
    assert_eq!(
        replica.key_file().expect("key file").as_deref(),
        Some(&b"age-encryption.org/v1..."[..])
    );
    assert_eq!(replica.key_trust().expect("trust"), Some(trust));
}

#[test]
fn every_commit_that_changes_a_summary_bumps_the_sidebar_generation_and_nothing_else_does() {
    let (_dir, path) = temp_replica();
    let replica = Replica::open(&path).expect("open");
    let chat = ChatId::new();
    assert_eq!(replica.sidebar_generation().expect("generation"), 0);
    let tally = Arc::new(AtomicU64::new(0));

    let mut write = replica.write_counted(tally.clone()).expect("write");
    write
        .put_local(&record(chat, 1, b"body"), None)
        .expect("put");
    write.commit().expect("commit");
    assert_eq!(replica.sidebar_generation().expect("generation"), 1);
    assert_eq!(tally.load(Ordering::SeqCst), 1);

    // A snapshot kept whole by the first release of it.
    let txn = replica.db.begin_write().expect("raw write");
    txn.open_table(META)
        .expect("table")
        .insert(META_SIDEBAR_SNAPSHOT_WHOLE, b"legacy".as_slice())
        .expect("insert");
    txn.commit().expect("commit");

    // A snapshot, a body, the outbox and the cursor leave it alone.
    let mut write = replica.write_counted(tally.clone()).expect("write");
    write
        .set_sidebar_snapshot(1, [Ok(b"one".to_vec()), Ok(b"two".to_vec())].into_iter())
        .expect("snapshot");
    assert!(write.put_body(chat, 1, b"other body").expect("body"));
    write.mark_pushed(chat, 1).expect("pushed");
    write.set_cursor(&Cursor("c".into())).expect("cursor");
    write.commit().expect("commit");
    assert_eq!(replica.sidebar_generation().expect("generation"), 1);
    let (generation, snapshot) = replica.sidebar_snapshot().expect("snapshot");
    let snapshot = snapshot.expect("kept");
    assert_eq!((generation, snapshot.generation), (1, 1));
    assert_eq!(snapshot.chunks, 2);
    assert_eq!(
        replica
            .meta_value(META_SIDEBAR_SNAPSHOT_WHOLE)
            .expect("meta"),
        None,
        "the whole snapshot of the first release is removed"
    );
    assert_eq!(
        replica.sidebar_snapshot_chunk(1).expect("chunk").as_deref(),
        Some(&b"two"[..])
    );
    let digest = snapshot.digest.expect("current, so digested");

    // A write dropped before its commit bumps nothing.
    let mut write = replica.write_counted(tally.clone()).expect("write");
    write.put_remote(&record(chat, 2, b"body")).expect("put");
    drop(write);
    assert_eq!(replica.sidebar_generation().expect("generation"), 1);
    assert_eq!(tally.load(Ordering::SeqCst), 1);

    // A record stored from outside the engine bumps it, uncounted: the
    // snapshot of generation 1 is stale from then on.
    assert_eq!(
        replica
            .store_server_records(&[record(chat, 3, b"b")])
            .expect("store"),
        1
    );
    assert_eq!(replica.sidebar_generation().expect("generation"), 2);
    assert_eq!(tally.load(Ordering::SeqCst), 1);
    let (generation, snapshot) = replica.sidebar_snapshot().expect("snapshot");
    let snapshot = snapshot.expect("kept");
    assert_ne!(snapshot.generation, generation);
    assert_eq!(snapshot.digest, None, "stale: not digested");

    // An older chatvault writes a summary without bumping the generation:
    // the digest tells.
    let mut write = replica.write().expect("write");
    write
        .set_sidebar_snapshot(2, [Ok(b"only".to_vec())].into_iter())
        .expect("snapshot");
    write.commit().expect("commit");
    let (_, snapshot) = replica.sidebar_snapshot().expect("snapshot");
    assert_eq!(snapshot.as_ref().map(|s| s.chunks), Some(1));
    assert_eq!(
        replica.sidebar_snapshot_chunk(1).expect("chunk"),
        None,
        "a shorter snapshot removes the chunks it no longer has"
    );
    let before = snapshot.and_then(|s| s.digest).expect("current");
    assert_ne!(before, digest);
    let txn = replica.db.begin_write().expect("raw write");
    txn.open_table(SUMMARIES)
        .expect("table")
        .insert(
            chat.as_bytes(),
            encoding::encode_summary(4, false, b"older build").as_slice(),
        )
        .expect("insert");
    txn.commit().expect("commit");
    let (generation, snapshot) = replica.sidebar_snapshot().expect("snapshot");
    let snapshot = snapshot.expect("kept");
    assert_eq!((generation, snapshot.generation), (2, 2), "not bumped");
    assert_ne!(snapshot.digest, Some(before), "but the digest moved");
}
