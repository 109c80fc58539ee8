//! The `chatvault` binary end to end on temporary folder vaults: importing
//! ChatGPT, Claude and chatvault JSON exports, `init` with remembered
//! vaults, `search`, `verify`, and the exit code of each class of failure.

use assert_cmd::Command;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

const PASSPHRASE: &str = "correct horse battery staple";
const CHATGPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../chatvault/tests/fixtures/chatgpt-conversations.json"
);
const CLAUDE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../chatvault/tests/fixtures/claude-conversations.json"
);

/// A temporary folder with servers and one config + data directory per
/// device.
struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn server(&self, name: &str) -> String {
        format!("file://{}", self.path(name).display())
    }

    /// `chatvault` as `device`: its own config and data directories.
    fn cmd(&self, device: &str, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chatvault"));
        command
            .args(args)
            // No unlock agent: these tests unlock every time (tests/agent.rs covers it).
            .env("CHATVAULT_NO_AGENT", "1")
            .env(
                "CHATVAULT_CONFIG_DIR",
                self.path(&format!("{device}-config")),
            )
            .env("XDG_DATA_HOME", self.path(&format!("{device}-data")))
            .env("HOME", self.path(&format!("{device}-home")))
            .env("CHATVAULT_PASSPHRASE", PASSPHRASE)
            .env("CHATVAULT_SCRYPT_WORK_FACTOR", "4")
            .env_remove("CHATVAULT_SERVER")
            .env_remove("CHATVAULT_REPLICA")
            .env_remove("CHATVAULT_VAULT")
            .env_remove("RUST_LOG")
            .write_stdin("");
        command
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, device: &str, args: &[&str]) -> String {
        let out = self.cmd(device, args).output().expect("run chatvault");
        assert!(
            out.status.success(),
            "{args:?}: exit {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8")
    }

    /// Runs a command that must fail with `code`, printing `message`.
    fn fails(&self, command: &mut Command, code: i32, message: &str) {
        let out = command.output().expect("run chatvault");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
        assert!(
            stderr.contains(message),
            "expected {message:?} in: {stderr}"
        );
        assert_eq!(
            stderr.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "one error line: {stderr}"
        );
    }

    fn json(&self, device: &str, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(device, args)).expect("JSON output")
    }
}

fn chat_titled<'a>(ls: &'a Value, title: &str) -> &'a Value {
    ls.as_array()
        .expect("a list")
        .iter()
        .find(|c| c["title"] == title)
        .unwrap_or_else(|| panic!("no chat titled {title:?} in {ls}"))
}

fn zip_of(json: &str, to: &Path) {
    let file = std::fs::File::create(to).expect("create zip");
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default();
    zip.start_file("chat.html", options).expect("entry");
    zip.write_all(b"<html></html>").expect("write");
    zip.start_file("conversations.json", options)
        .expect("entry");
    zip.write_all(&std::fs::read(json).expect("fixture"))
        .expect("write");
    zip.finish().expect("finish zip");
}

#[test]
fn a_chatgpt_export_keeps_the_current_branch_and_original_times_and_reimporting_adds_nothing() {
    let world = World::new();
    world.ok("laptop", &["init", "--create", &world.server("server")]);
    let out = world.ok("laptop", &["import", CHATGPT]);
    assert!(out.starts_with("imported 2 new chats"), "{out}");

    let ls = world.json("laptop", &["ls", "--json"]);
    assert_eq!(ls.as_array().expect("list").len(), 2, "{ls}");
    let trip = chat_titled(&ls, "Trip to München");
    assert_eq!(trip["created"], "2023-11-14T22:13:20.000Z");
    assert_eq!(trip["last_activity"], "2023-11-14T22:18:20.250Z");
    assert_eq!(trip["messages"], 4);

    let id = trip["id"].as_str().expect("id");
    let chat = world.json("laptop", &["show", "--json", id]);
    let messages = chat["messages"].as_array().expect("messages");
    let summary: Vec<(&str, &str, &str)> = messages
        .iter()
        .map(|m| {
            (
                m["role"].as_str().expect("role"),
                m["created"].as_str().expect("time"),
                m["content"].as_str().expect("text"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "user",
                "2023-11-14T22:15:00.500Z",
                "[image]\nWie weit ist es von Zürich nach München? 🚆\n[file: map.png]"
            ),
            (
                "assistant",
                "2023-11-14T22:15:10.000Z",
                "```tool_use python\nprint(312 / 100)\n```"
            ),
            (
                "tool",
                "2023-11-14T22:15:11.000Z",
                "```tool_result python\n3.12\n```"
            ),
            (
                "assistant",
                "2023-11-14T22:15:20.000Z",
                "Etwa 312 km – gut drei Stunden mit dem Zug."
            ),
        ]
    );
    let text = world.ok("laptop", &["show", id]);
    assert!(text.contains("2023-11-14 22:15:00Z"), "{text}");
    for hidden in ["abandoned branch", "edited away", "HIDDEN PROFILE"] {
        assert!(!text.contains(hidden), "{hidden:?} shown: {text}");
    }

    let again = world.ok("laptop", &["import", CHATGPT]);
    assert!(
        again.starts_with("imported 0 new chats") && again.contains("unchanged 2"),
        "{again}"
    );
    let zip = world.path("chatgpt-export.zip");
    zip_of(CHATGPT, &zip);
    let from_zip = world.ok("laptop", &["import", zip.to_str().expect("path")]);
    assert!(from_zip.contains("unchanged 2"), "{from_zip}");
    let status = world.ok("laptop", &["status"]);
    assert!(status.starts_with("pending 0"), "{status}");
    assert_eq!(world.json("laptop", &["ls", "--json"]), ls);
}

#[test]
fn a_claude_export_keeps_text_tool_blocks_attachments_and_times() {
    let world = World::new();
    world.ok("a", &["init", "--create", &world.server("server")]);
    world.ok("a", &["import", CLAUDE]);
    let ls = world.json("a", &["ls", "--json"]);
    let chat = chat_titled(&ls, "日本語の質問");
    assert_eq!(chat["created"], "2024-03-01T12:00:00.000Z");
    let chat = world.json("a", &["show", "--json", chat["id"].as_str().expect("id")]);
    let contents: Vec<(&str, &str, &str)> = chat["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["role"].as_str().expect("role"),
                m["created"].as_str().expect("time"),
                m["content"].as_str().expect("text"),
            )
        })
        .collect();
    assert_eq!(
        contents,
        vec![
            (
                "user",
                "2024-03-01T12:00:01.000Z",
                "東京の天気は？\n```attachment notes.txt\nx\n```"
            ),
            (
                "assistant",
                "2024-03-01T12:00:09.500Z",
                "```tool_use web_search\n{\"query\":\"Tokyo weather\"}\n```\n\
                 ```tool_result\nsunny\n```\n晴れです。"
            ),
            ("user", "2024-03-01T12:05:00.123Z", "Thanks!"),
        ]
    );
    assert!(world.ok("a", &["import", CLAUDE]).contains("unchanged 1"));
}

#[test]
fn a_json_export_imported_into_a_fresh_vault_exports_the_same() {
    let world = World::new();
    world.ok("a", &["init", "--create", &world.server("one")]);
    world.ok("a", &["import", CHATGPT]);
    world.ok("a", &["import", CLAUDE]);
    let own = world.ok("a", &["new", "typed here"]).trim().to_string();
    world.ok("a", &["add", &own, "a note with \"quotes\"\nand two lines"]);
    world.ok("a", &["star", &own]);
    let first = world.path("first.json");
    world.ok(
        "a",
        &[
            "export",
            "--format",
            "json",
            "--out",
            first.to_str().expect("path"),
        ],
    );

    world.ok("b", &["init", "--create", &world.server("two")]);
    let out = world.ok("b", &["import", first.to_str().expect("path")]);
    assert!(out.starts_with("imported 4 new chats"), "{out}");
    let second = world.path("second.json");
    world.ok(
        "b",
        &[
            "export",
            "--format",
            "json",
            "--out",
            second.to_str().expect("path"),
        ],
    );
    let first = std::fs::read_to_string(first).expect("first export");
    assert_eq!(
        first,
        std::fs::read_to_string(second).expect("second export")
    );
    let export: Value = serde_json::from_str(&first).expect("JSON");
    // The ChatGPT chat has branches, so the document says it carries them.
    assert_eq!(export["format"], "chatvault-json/2");
    assert!(export["chats"]
        .as_array()
        .expect("chats")
        .iter()
        .any(|c| c["branches"].as_array().is_some_and(|b| b.len() == 2)));
    assert_eq!(
        world.json("a", &["show", "--json", &own]),
        world.json("b", &["show", "--json", &own])
    );
    assert!(world.ok("b", &["import", CHATGPT]).contains("unchanged 2"));
}

#[test]
fn two_config_dirs_are_two_devices_that_converge() {
    let world = World::new();
    let url = world.server("shared");
    world.ok("laptop", &["init", "--create", &url, "--vault", "personal"]);
    world.ok("laptop", &["import", CLAUDE]);
    world.ok("phone", &["init", "--create", &url, "--vault", "personal"]);
    let ls = world.json("phone", &["ls", "--json"]);
    let id = chat_titled(&ls, "日本語の質問")["id"]
        .as_str()
        .expect("id")
        .to_string();
    world.ok("phone", &["add", &id, "from the phone"]);
    world.ok("laptop", &["rename", &id, "Tokyo weather"]);
    let laptop = world.json("laptop", &["show", "--json", &id]);
    let phone = world.json("phone", &["show", "--json", &id]);
    assert_eq!(laptop, phone);
    assert_eq!(laptop["title"], "Tokyo weather");
    assert_eq!(laptop["messages"].as_array().expect("messages").len(), 4);
}

#[test]
fn search_finds_titles_and_messages_ignoring_case() {
    let world = World::new();
    world.ok("a", &["init", "--create", &world.server("server")]);
    world.ok("a", &["import", CHATGPT]);
    let hits = world.ok("a", &["search", "MÜNCHEN"]);
    assert_eq!(hits.lines().count(), 2, "title and a message: {hits}");
    assert!(hits.contains("2023-11-14T22:15:00.500Z"), "{hits}");
    assert!(hits.contains("nach München? 🚆"), "{hits}");
    world.fails(
        &mut world.cmd("a", &["search", "not there"]),
        1,
        "no matches for \"not there\"",
    );
}

#[test]
fn verify_passes_on_a_sound_vault_and_catches_a_blob_corrupted_on_disk() {
    let world = World::new();
    world.ok("a", &["init", "--create", &world.server("server")]);
    world.ok("a", &["import", CHATGPT]);
    let out = world.ok("a", &["verify"]);
    assert!(out.contains("all open and agree"), "{out}");

    let mut blobs = Vec::new();
    let mut folders = vec![world.path("server")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(folder).expect("read").flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else if path.components().any(|c| c.as_os_str() == "rec") {
                blobs.push(path);
            }
        }
    }
    assert!(!blobs.is_empty(), "record blobs on disk");
    for blob in &blobs {
        let mut bytes = std::fs::read(blob).expect("blob");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        std::fs::write(blob, bytes).expect("corrupt");
    }
    let out = world.cmd("a", &["verify"]).output().expect("run verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{stdout}");
    assert!(stdout.contains("server  chat"), "{stdout}");
    assert!(stdout.contains("problem(s)"), "{stdout}");
}

#[test]
fn failures_print_one_line_and_exit_with_their_class() {
    let world = World::new();
    world.ok("a", &["init", "--create", &world.server("server")]);
    world.ok("a", &["new", "secret"]);

    // Wrong key: 3.
    world.fails(
        world
            .cmd("b", &["init", "--create", &world.server("server")])
            .env("CHATVAULT_PASSPHRASE", "not it"),
        3,
        "wrong key",
    );
    // Unknown vault name: 2.
    world.fails(
        &mut world.cmd("a", &["--vault", "work", "ls"]),
        2,
        "no vault named \"work\"",
    );
    // S3 without credentials: 3, naming the variables.
    world.fails(
        world
            .cmd("a", &["--server", "s3://bucket/vault", "ls"])
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
            .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
        3,
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    );
    // Malformed import: 2, naming the conversation and the field; nothing written.
    let bad = world.path("bad.json");
    let mut conversations: Value =
        serde_json::from_str(&std::fs::read_to_string(CHATGPT).expect("fixture")).expect("JSON");
    conversations[1]["mapping"]["q"]["message"]["create_time"] = Value::from("yesterday");
    std::fs::write(&bad, conversations.to_string()).expect("write");
    world.fails(
        &mut world.cmd("a", &["import", bad.to_str().expect("path")]),
        2,
        "conversation #1 (6553a1b0-0000-4000-8000-0000000000b2, \"Empty-system scaffolding only\"), \
         field `mapping.q.message.create_time`",
    );
    assert_eq!(
        world.json("a", &["ls", "--json"]).as_array().map(Vec::len),
        Some(1)
    );
    // Usage: 2.
    world.fails(
        &mut world.cmd("a", &["show", "nope"]),
        2,
        "no chat \"nope\"",
    );
}

#[cfg(feature = "s3")]
#[test]
fn an_unreachable_server_exits_4_saying_to_check_the_network() {
    let world = World::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    world.fails(
        world
            .cmd("a", &["init", "--create", "s3://bucket/vault"])
            .env("AWS_ENDPOINT", format!("http://127.0.0.1:{port}"))
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "offline")
            .env("AWS_SECRET_ACCESS_KEY", "offline")
            .env("AWS_REGION", "us-east-1"),
        4,
        "check the network",
    );
}

#[test]
fn help_documents_every_command_and_the_exit_codes_and_completions_print() {
    let world = World::new();
    let help = world.ok("a", &["--help"]);
    for command in [
        "init",
        "ls",
        "show",
        "new",
        "add",
        "rename",
        "star",
        "unstar",
        "rm",
        "rm-message",
        "sync",
        "watch",
        "export",
        "import",
        "search",
        "verify",
        "status",
        "completions",
    ] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "{command} missing from: {help}"
        );
    }
    assert!(
        help.contains("Exit codes:") && help.contains("5  integrity"),
        "{help}"
    );
    let bash = world.ok("a", &["completions", "bash"]);
    assert!(bash.contains("complete -F"), "{bash}");
}

/// The plaintext (`chatvault-export/1`) of `device`'s age export, written
/// to `name`.
fn export_plaintext(world: &World, device: &str, name: &str) -> String {
    use std::io::Read;
    let file = world.path(&format!("{name}.age"));
    let output = format!("--output={}", file.display());
    world
        .cmd(
            device,
            &["export", "--passphrase-env", "EXPORT_PASS", &output],
        )
        .env("EXPORT_PASS", "export secret")
        .assert()
        .success();
    let bytes = std::fs::read(&file).expect("export file");
    let decryptor = age::Decryptor::new(&bytes[..]).expect("an age file");
    let identity = age::scrypt::Identity::new(age::secrecy::SecretString::from(
        "export secret".to_string(),
    ));
    let mut plaintext = Vec::new();
    decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .expect("the passphrase decrypts")
        .read_to_end(&mut plaintext)
        .expect("read");
    let path = world.path(&format!("{name}.json"));
    std::fs::write(&path, plaintext).expect("write");
    path.to_str().expect("path").to_string()
}

#[test]
fn importing_an_export_that_deleted_a_message_deletes_it_only_when_asked() {
    let world = World::new();
    world.ok("a", &["init", "--create", &world.server("one")]);
    let chat = world.ok("a", &["new", "kept whole"]).trim().to_string();
    let message = world.ok("a", &["add", &chat, "first"]).trim().to_string();
    world.ok("a", &["add", &chat, "second"]);
    let before = export_plaintext(&world, "a", "before");
    world.ok("a", &["rm-message", &chat, &message]);
    let after = export_plaintext(&world, "a", "after");

    world.ok("b", &["init", "--create", &world.server("two")]);
    world.ok("b", &["import", &before]);
    let messages = |world: &World| {
        world.json("b", &["show", "--json", &chat])["messages"]
            .as_array()
            .map(Vec::len)
    };
    assert_eq!(messages(&world), Some(2));
    let out = world.cmd("b", &["import", &after]).output().expect("run");
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--apply-deletions"), "{stderr}");
    assert_eq!(messages(&world), Some(2), "an import does not delete");
    world.ok("b", &["import", "--apply-deletions", &after]);
    assert_eq!(messages(&world), Some(1), "asked to, it deletes");
}

/// Writes `conversations` as a JSON file `name` in `world`; returns its path.
fn write_json(world: &World, name: &str, conversations: &Value) -> String {
    let path = world.path(name);
    std::fs::write(&path, conversations.to_string()).expect("write");
    path.to_str().expect("path").to_string()
}

/// The contents of the messages of the chat titled `title`.
fn contents(world: &World, device: &str, title: &str) -> Vec<String> {
    let ls = world.json(device, &["ls", "--json"]);
    let id = chat_titled(&ls, title)["id"]
        .as_str()
        .expect("id")
        .to_string();
    world.json(device, &["show", "--json", &id])["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["content"].as_str().expect("text").to_string())
        .collect()
}

#[test]
fn a_claude_attachments_extracted_text_is_kept_under_its_file_name_and_searchable() {
    let world = World::new();
    world.ok("a", &["init", "--create", &world.server("server")]);
    let mut conversations: Value =
        serde_json::from_str(&std::fs::read_to_string(CLAUDE).expect("fixture")).expect("JSON");
    conversations[0]["chat_messages"][0]["attachments"][0]["extracted_content"] =
        Value::from("Packliste: Regenschirm\n```\ncode in the file\n```");
    let file = write_json(&world, "claude.json", &conversations);
    world.ok("a", &["import", &file]);
    assert_eq!(
        contents(&world, "a", "日本語の質問")[0],
        "東京の天気は？\n````attachment notes.txt\nPackliste: Regenschirm\n```\ncode in the file\n```\n````"
    );
    let hits = world.ok("a", &["search", "regenschirm"]);
    assert_eq!(hits.lines().count(), 1, "{hits}");
}

#[test]
fn claude_thinking_and_tool_blocks_are_kept_in_marked_fenced_blocks() {
    let world = World::new();
    world.ok("a", &["init", "--create", &world.server("server")]);
    let mut conversations: Value =
        serde_json::from_str(&std::fs::read_to_string(CLAUDE).expect("fixture")).expect("JSON");
    let blocks = conversations[0]["chat_messages"][1]["content"]
        .as_array_mut()
        .expect("blocks");
    blocks.insert(
        0,
        serde_json::json!({"type": "thinking", "thinking": "The user asks about Tokyo; search first."}),
    );
    blocks[2]["name"] = Value::from("web_search");
    let file = write_json(&world, "claude.json", &conversations);
    world.ok("a", &["import", &file]);
    assert_eq!(
        contents(&world, "a", "日本語の質問")[1],
        "```thinking\nThe user asks about Tokyo; search first.\n```\n\
         ```tool_use web_search\n{\"query\":\"Tokyo weather\"}\n```\n\
         ```tool_result web_search\nsunny\n```\n\
         晴れです。"
    );
    assert_eq!(
        world.ok("a", &["search", "search first"]).lines().count(),
        1
    );
}

#[test]
fn chatgpt_code_runs_and_their_output_are_kept_as_tool_blocks() {
    let world = World::new();
    world.ok("a", &["init", "--create", &world.server("server")]);
    world.ok("a", &["import", CHATGPT]);
    let contents = contents(&world, "a", "Trip to München");
    assert_eq!(contents[1], "```tool_use python\nprint(312 / 100)\n```");
    assert_eq!(contents[2], "```tool_result python\n3.12\n```");
}

#[test]
fn untitled_chats_are_titled_from_their_first_user_message_or_untitled() {
    let world = World::new();
    world.ok("a", &["init", "--create", &world.server("server")]);
    let mut claude: Value =
        serde_json::from_str(&std::fs::read_to_string(CLAUDE).expect("fixture")).expect("JSON");
    claude[0]["name"] = Value::from("  ");
    let long =
        "Please summarise the following meeting notes for the quarterly review of the project";
    claude[0]["chat_messages"][0]["content"][0]["text"] = Value::from(long);
    let mut empty = claude[0].clone();
    empty["uuid"] = Value::from("1b7e4c2a-0000-4000-8000-00000000c1a1");
    empty.as_object_mut().expect("object").remove("name");
    empty["chat_messages"] = Value::Array(Vec::new());
    claude.as_array_mut().expect("list").push(empty);
    world.ok(
        "a",
        &["import", &write_json(&world, "claude.json", &claude)],
    );

    let mut chatgpt: Value =
        serde_json::from_str(&std::fs::read_to_string(CHATGPT).expect("fixture")).expect("JSON");
    chatgpt[1]["title"] = Value::Null;
    world.ok(
        "a",
        &["import", &write_json(&world, "chatgpt.json", &chatgpt)],
    );

    let ls = world.json("a", &["ls", "--json"]);
    chat_titled(&ls, "Please summarise the following meeting notes for the…");
    chat_titled(&ls, "(untitled)");
    chat_titled(&ls, "hello");
}

#[test]
fn the_import_summary_counts_what_was_left_out_on_purpose() {
    let world = World::new();
    world.ok("a", &["init", "--create", &world.server("server")]);
    let out = world.ok("a", &["import", CHATGPT]);
    assert!(
        out.contains("left out on purpose: 2 hidden messages, 1 empty message"),
        "{out}"
    );
    assert!(!out.contains("branches"), "{out}");
    let claude = world.ok("a", &["import", CLAUDE]);
    assert!(!claude.contains("left out"), "{claude}");
}

#[test]
fn show_marks_alternatives_show_all_prints_every_branch_and_select_switches() {
    let world = World::new();
    world.ok("laptop", &["init", "--create", &world.server("server")]);
    world.ok("laptop", &["import", CHATGPT]);
    let ls = world.json("laptop", &["ls", "--json"]);
    let id = chat_titled(&ls, "Trip to München")["id"]
        .as_str()
        .expect("id")
        .to_string();

    // The branch ChatGPT showed, its first question marked as one of two.
    let shown = world.ok("laptop", &["show", &id]);
    let header = shown
        .lines()
        .find(|l| l.contains("user"))
        .expect("a user message");
    assert!(header.ends_with("[2/2]"), "{shown}");
    assert!(!shown.contains("edited away"), "{shown}");

    // Every branch, the edited-away question and its answer indented.
    let all = world.ok("laptop", &["show", "--all", &id]);
    for text in [
        "First draft of the question (edited away)",
        "Answer on the abandoned branch",
        "Etwa 312 km",
    ] {
        assert!(all.contains(text), "{text:?} missing: {all}");
    }
    assert!(
        all.lines()
            .any(|l| l.starts_with("  ") && l.contains("[1/2]") && !l.ends_with('*')),
        "{all}"
    );

    // The JSON carries the tree; select the other branch by a prefix.
    let json = world.json("laptop", &["show", "--json", &id]);
    let branches = json["branches"].as_array().expect("branches");
    let draft = branches
        .iter()
        .find(|m| m["content"] == "First draft of the question (edited away)")
        .expect("the edited-away question");
    let draft_id = draft["id"].as_str().expect("id").replace('-', "");
    let out = world.ok("laptop", &["select", &id, &draft_id[..8]]);
    assert!(out.contains("Answer on the abandoned branch"), "{out}");
    let shown = world.ok("laptop", &["show", &id]);
    assert!(
        shown.contains("edited away") && !shown.contains("Etwa 312 km"),
        "{shown}"
    );
    let ls = world.json("laptop", &["ls", "--json"]);
    assert_eq!(chat_titled(&ls, "Trip to München")["messages"], 2);

    // Another device sees the same selection.
    world.ok("phone", &["init", "--create", &world.server("server")]);
    let on_phone = world.ok("phone", &["show", &id]);
    assert!(on_phone.contains("edited away"), "{on_phone}");
}

#[test]
fn an_age_encrypted_file_is_refused_saying_to_decrypt_it_first() {
    let world = World::new();
    world.ok("a", &["init", "--create", &world.server("server")]);
    let backup = world.path("backup.age");
    std::fs::write(
        &backup,
        b"age-encryption.org/v1\n-> scrypt c2FsdA 18\nAAAA\n--- BBBB\n\x00\x01binary",
    )
    .expect("write");
    world.fails(
        &mut world.cmd("a", &["import", backup.to_str().expect("path")]),
        2,
        "age -d backup.age > backup.json",
    );
    let armored = world.path("backup.txt");
    std::fs::write(
        &armored,
        "-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n-----END AGE ENCRYPTED FILE-----\n",
    )
    .expect("write");
    world.fails(
        &mut world.cmd("a", &["import", armored.to_str().expect("path")]),
        2,
        "decrypt it first",
    );
}
