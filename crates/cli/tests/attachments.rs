//! Attachments through the real `chatvault` binary on a folder server, one
//! replica file per simulated device: `attach` on one device, `attachments`,
//! `show` and `save-attachment` on another, the references in the exports
//! (JSON and age, `--no-attachments`) and through a re-import, and the
//! bytes in the exports, restored into another vault.

mod common;
use common::{failed_with, succeeded, Setup, PASSPHRASE};
use serde_json::Value;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};

impl Setup {
    /// The command for the device with the replica file `device`, on the
    /// folder server `server`, run in `cwd`, unlocked with [`PASSPHRASE`].
    fn command_in(&self, server: &str, device: &str, cwd: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chatvault"));
        command
            .args(args)
            .current_dir(cwd)
            // No unlock agent: these tests unlock every time.
            .env("CHATVAULT_NO_AGENT", "1")
            .env(
                "CHATVAULT_SERVER",
                format!("file://{}", self.path(server).display()),
            )
            .env("CHATVAULT_PASSPHRASE", PASSPHRASE)
            .env("CHATVAULT_SCRYPT_WORK_FACTOR", "4")
            .env("XDG_DATA_HOME", self.path("data"))
            .env("CHATVAULT_CONFIG_DIR", self.path("config"))
            .env_remove("CHATVAULT_REPLICA")
            .env_remove("CHATVAULT_VAULT")
            .stdin(Stdio::null())
            .arg("--replica")
            .arg(self.path(device));
        command
    }

    /// Runs `args` on `device` against the server `server`, in `cwd`.
    fn run_in(&self, server: &str, device: &str, cwd: &Path, args: &[&str]) -> Output {
        self.command_in(server, device, cwd, args)
            .output()
            .expect("run chatvault")
    }

    /// Runs `args` on `device` against the server `server` in the test's
    /// folder; returns the command's output.
    fn run(&self, device: &str, args: &[&str]) -> Output {
        self.run_in("server", device, self.dir.path(), args)
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, device: &str, args: &[&str]) -> String {
        succeeded(self.run(device, args))
    }
}

/// `len` bytes that neither repeat nor compress.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A chat on device `a.redb` with one message carrying `photo.jpg` (2.4 MB,
/// more than one chunk) and `notes.txt`; returns the chat id, the message
/// id and the photo's bytes.
fn chat_with_files(setup: &Setup) -> (String, String, Vec<u8>) {
    let photo = noise(2_400_000, 7);
    std::fs::write(setup.path("photo.jpg"), &photo).expect("write the photo");
    std::fs::write(setup.path("notes.txt"), "see the photo\n").expect("write the notes");
    let chat = setup.ok("a.redb", &["new", "Trip"]).trim().to_string();
    let out = setup.ok(
        "a.redb",
        &[
            "attach",
            &chat,
            setup.path("photo.jpg").to_str().expect("path"),
            setup.path("notes.txt").to_str().expect("path"),
            "--text",
            "The view from the train",
        ],
    );
    let mut lines = out.lines();
    let message = lines.next().expect("the message id").trim().to_string();
    assert_eq!(
        lines.collect::<Vec<_>>(),
        [
            "  [attachment] photo.jpg (image/jpeg, 2.4 MB)",
            "  [attachment] notes.txt (text/plain, 14 B)"
        ],
        "{out}"
    );
    (chat, message, photo)
}

#[test]
fn a_file_attached_on_one_device_is_listed_shown_and_saved_on_another() {
    let setup = Setup::new();
    let (chat, message, photo) = chat_with_files(&setup);

    // The second device syncs and lists both files under the message.
    setup.ok("b.redb", &["sync"]);
    let listed = setup.ok("b.redb", &["attachments", &chat]);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    let prefix = &message.replace('-', "")[..8];
    assert!(lines[0].starts_with(prefix), "{listed}");
    assert!(
        lines[0].contains("2.4 MB  image/jpeg") && lines[0].ends_with("  photo.jpg"),
        "{listed}"
    );
    assert!(lines[1].ends_with("  notes.txt"), "{listed}");
    let json: Value =
        serde_json::from_str(&setup.ok("b.redb", &["attachments", "--json", &chat])).expect("JSON");
    assert_eq!(json[0]["message"], message.as_str());
    assert_eq!(json[0]["name"], "photo.jpg");
    assert_eq!(json[0]["media_type"], "image/jpeg");
    assert_eq!(json[0]["size"], 2_400_000);
    assert_eq!(json[0]["id"].as_str().map(str::len), Some(64));

    // `show` prints the attachment lines under the message, in both views.
    for view in [vec!["show", &chat], vec!["show", "--all", &chat]] {
        let show = setup.ok("b.redb", &view);
        let text = show
            .find("The view from the train")
            .expect("the message text");
        let photo_line = show
            .find("    [attachment] photo.jpg (image/jpeg, 2.4 MB)")
            .expect("the photo's line");
        assert!(text < photo_line, "{show}");
        assert!(
            show.contains("    [attachment] notes.txt (text/plain, 14 B)"),
            "{show}"
        );
    }

    // Saved by name into the current folder, the bytes are the file's.
    let downloads = setup.path("downloads");
    std::fs::create_dir(&downloads).expect("downloads folder");
    let save = ["save-attachment", chat.as_str(), "photo.jpg"];
    let out = setup.run_in("server", "b.redb", &downloads, &save);
    succeeded(out);
    let saved = downloads.join("photo.jpg");
    assert!(std::fs::read(&saved).expect("saved file") == photo);
    // No partial file is left beside it.
    assert_eq!(std::fs::read_dir(&downloads).expect("list").count(), 1);

    // An existing file is kept unless --force.
    std::fs::write(&saved, "mine").expect("overwrite locally");
    failed_with(
        setup.run_in("server", "b.redb", &downloads, &save),
        2,
        "exists: pass --force",
    );
    assert_eq!(std::fs::read(&saved).expect("kept"), b"mine");
    let forced = ["save-attachment", chat.as_str(), "photo.jpg", "--force"];
    succeeded(setup.run_in("server", "b.redb", &downloads, &forced));
    assert!(std::fs::read(&saved).expect("saved again") == photo);

    // -o names the file; a blob id prefix names the attachment.
    let notes_id = json[1]["id"].as_str().expect("notes id");
    let to = setup.path("notes-copy.txt");
    setup.ok(
        "b.redb",
        &[
            "save-attachment",
            &chat,
            &notes_id[..6],
            "-o",
            to.to_str().expect("path"),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(&to).expect("notes"),
        "see the photo\n"
    );
}

#[test]
fn an_unknown_or_ambiguous_attachment_is_a_usage_error() {
    let setup = Setup::new();
    let (chat, _, _) = chat_with_files(&setup);
    // Another, different file also named photo.jpg.
    let other = setup.path("other");
    std::fs::create_dir(&other).expect("folder");
    std::fs::write(other.join("photo.jpg"), noise(100, 9)).expect("write");
    setup.ok(
        "a.redb",
        &[
            "attach",
            &chat,
            other.join("photo.jpg").to_str().expect("path"),
        ],
    );
    let out = setup.run("a.redb", &["save-attachment", &chat, "photo.jpg"]);
    failed_with(out, 2, "matches 2 different files");
    let out = setup.run("a.redb", &["save-attachment", &chat, "nothing.pdf"]);
    failed_with(out, 2, "no attachment \"nothing.pdf\"");
    assert!(!setup.path("photo.jpg.chatvault-partial").exists());
    // A file that cannot be read fails before anything is sent.
    let missing = setup.path("missing.bin");
    let out = setup.run(
        "a.redb",
        &["attach", &chat, missing.to_str().expect("path")],
    );
    failed_with(out, 6, "cannot read");
}

#[test]
fn exports_carry_the_references_and_a_json_reimport_keeps_them() {
    let setup = Setup::new();
    let (chat, message, photo) = chat_with_files(&setup);

    // Plain JSON: the message names its files, and the format says so.
    let json = setup.ok(
        "a.redb",
        &["export", "--format", "json", "--no-attachments"],
    );
    let export: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(export["format"], "chatvault-json/3");
    let exported = &export["chats"][0]["messages"][0];
    assert_eq!(exported["id"], message.as_str());
    let attachments = exported["attachments"].as_array().expect("attachments");
    assert_eq!(attachments.len(), 2);
    assert_eq!(attachments[0]["name"], "photo.jpg");
    assert_eq!(attachments[0]["media_type"], "image/jpeg");
    assert_eq!(attachments[0]["size"], 2_400_000);
    assert_eq!(attachments[0]["id"].as_str().map(str::len), Some(64));
    assert_eq!(
        attachments[1].as_object().map(|o| o.len()),
        Some(4),
        "id, name, media_type, size: {json}"
    );
    // A chat without attachments keeps the older format name.
    let plain = Setup::new();
    plain.ok("a.redb", &["new", "Nothing attached"]);
    let plain: Value =
        serde_json::from_str(&plain.ok("a.redb", &["export", "--format", "json"])).expect("JSON");
    assert_eq!(plain["format"], "chatvault-json/1");

    // Imported into the same vault from a fresh device, the references
    // still open the bytes.
    let file = setup.path("chats.json");
    std::fs::write(&file, &json).expect("write the export");
    setup.ok("c.redb", &["import", file.to_str().expect("path")]);
    let dir = setup.path("saved");
    std::fs::create_dir(&dir).expect("folder");
    let to = dir.join("p.jpg");
    setup.ok(
        "c.redb",
        &[
            "save-attachment",
            &chat,
            "photo.jpg",
            "-o",
            to.to_str().expect("path"),
        ],
    );
    assert!(std::fs::read(&to).expect("saved") == photo);

    // Into another vault: the references are kept (the bytes are not in
    // the export), and exporting again gives the same file.
    let out = succeeded(setup.run_in(
        "other-server",
        "d.redb",
        setup.dir.path(),
        &["import", file.to_str().expect("path")],
    ));
    assert!(out.starts_with("imported 1 new chat"), "{out}");
    let again = succeeded(setup.run_in(
        "other-server",
        "d.redb",
        setup.dir.path(),
        &["export", "--format", "json", "--no-attachments"],
    ));
    assert_eq!(again, json);
    let listed = succeeded(setup.run_in(
        "other-server",
        "d.redb",
        setup.dir.path(),
        &["attachments", &chat],
    ));
    assert_eq!(listed.lines().count(), 2, "{listed}");
    // That vault does not hold the bytes.
    let out = setup.run_in(
        "other-server",
        "d.redb",
        setup.dir.path(),
        &["save-attachment", &chat, "notes.txt", "-o", "elsewhere.txt"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(!setup.path("elsewhere.txt").exists());

    // The age export carries the references in the chat states.
    let key = age::x25519::Identity::generate();
    let out = setup.run(
        "a.redb",
        &[
            "export",
            "--recipient",
            &key.to_public().to_string(),
            "--no-attachments",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decryptor = age::Decryptor::new(&out.stdout[..]).expect("an age file");
    let mut plaintext = String::new();
    decryptor
        .decrypt(std::iter::once(&key as &dyn age::Identity))
        .expect("decrypts")
        .read_to_string(&mut plaintext)
        .expect("read");
    let backup: Value = serde_json::from_str(&plaintext).expect("JSON");
    assert_eq!(backup["format"], "chatvault-export/3");
    let photo_id = attachments[0]["id"].as_str().expect("id");
    assert!(plaintext.contains(photo_id), "{plaintext}");
    assert!(
        plaintext.contains("\"media_type\":\"image/jpeg\""),
        "{plaintext}"
    );
}

/// `export` (JSON to a file, and age to standard output) carries the
/// files' bytes: imported into another vault, `get` there writes the same
/// bytes (by SHA-256), and importing again adds nothing.
#[test]
fn an_export_carries_the_bytes_and_another_vault_gets_them_back() {
    use sha2::{Digest, Sha256};
    let setup = Setup::new();
    let (chat, _, photo) = chat_with_files(&setup);
    let file = setup.path("backup.json");
    let path = file.to_str().expect("path");
    let run = setup.run("a.redb", &["export", "--format", "json", "-o", path]);
    let said = String::from_utf8_lossy(&run.stderr).to_string();
    succeeded(run);
    assert!(
        said.contains("exported 1 chats and 2 attachments"),
        "{said}"
    );
    let export: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("the export")).expect("JSON");
    assert_eq!(export["format"], "chatvault-json/4");
    assert_eq!(export["files"].as_array().map(Vec::len), Some(2));

    // The age export, decrypted, is a backup of the same.
    let key = age::x25519::Identity::generate();
    let out = setup.run(
        "a.redb",
        &["export", "--recipient", &key.to_public().to_string()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut plaintext = Vec::new();
    age::Decryptor::new(&out.stdout[..])
        .expect("an age file")
        .decrypt(std::iter::once(&key as &dyn age::Identity))
        .expect("decrypts")
        .read_to_end(&mut plaintext)
        .expect("read");
    let backup = setup.path("backup-age.json");
    std::fs::write(&backup, &plaintext).expect("write the plaintext");

    for (server, export) in [("json-server", &file), ("age-server", &backup)] {
        let export = export.to_str().expect("path");
        let run = |device: &str, args: &[&str]| {
            let device = format!("{server}-{device}");
            succeeded(setup.run_in(server, &device, setup.dir.path(), args))
        };
        let out = run("d.redb", &["import", export]);
        assert!(out.contains("2 files attached"), "{server}: {out}");
        let out = run("d.redb", &["import", export]);
        assert!(out.contains("imported 0 new chats"), "{server}: {out}");
        assert!(out.contains("updated 0"), "{server}: {out}");
        run("d.redb", &["sync"]);
        // Another device of that vault fetches the bytes from its server.
        let target = setup.path(&format!("{server}.jpg"));
        run(
            "e.redb",
            &[
                "get",
                &chat,
                "photo.jpg",
                "-o",
                target.to_str().expect("path"),
            ],
        );
        let got = std::fs::read(&target).expect("read what get wrote");
        assert_eq!(Sha256::digest(&got), Sha256::digest(&photo), "{server}");
    }
}

/// A ChatGPT export zip with an image: `import` attaches it, `sync` uploads
/// it, and `get` on another device writes the same bytes (by SHA-256).
#[test]
fn an_imported_chatgpt_zip_brings_its_image_and_get_returns_the_same_bytes() {
    use sha2::{Digest, Sha256};
    use std::io::Write;
    let setup = Setup::new();
    let image = noise(1_700_000, 11);
    let json = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../chatvault/tests/fixtures/chatgpt-conversations.json"),
    )
    .expect("the fixture");
    let export = setup.path("chatgpt-export.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&export).expect("create the zip"));
    let options = zip::write::SimpleFileOptions::default();
    zip.start_file("conversations.json", options)
        .expect("entry");
    zip.write_all(&json).expect("write");
    zip.start_file("file-abc-map.png", options).expect("entry");
    zip.write_all(&image).expect("write");
    zip.finish().expect("finish the zip");

    let out = setup.ok("a.redb", &["import", export.to_str().expect("utf-8 path")]);
    assert!(out.contains("1 files attached"), "{out}");
    setup.ok("a.redb", &["sync"]);

    let chat = setup
        .ok("b.redb", &["ls", "--json"])
        .parse::<Value>()
        .expect("ls --json")
        .as_array()
        .expect("a list")
        .iter()
        .find(|c| c["title"].as_str().is_some_and(|t| t.contains("München")))
        .and_then(|c| c["id"].as_str())
        .expect("the imported chat")
        .to_string();
    let listed = setup.ok("b.redb", &["attachments", &chat]);
    assert!(
        listed.contains("map.png") && listed.contains("image/png"),
        "{listed}"
    );
    let target = setup.path("got.png");
    setup.ok(
        "b.redb",
        &[
            "get",
            &chat,
            "map.png",
            "-o",
            target.to_str().expect("utf-8 path"),
        ],
    );
    let got = std::fs::read(&target).expect("read what get wrote");
    assert_eq!(Sha256::digest(&got), Sha256::digest(&image));
}
