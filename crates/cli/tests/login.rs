//! `chatvault login` / `logout` on a Supabase vault, against the conformance
//! fixtures (PostgreSQL with the migrations, the PostgREST-compatible
//! gateway and the Auth stand-in behind one project URL).

use chatvault_test_services::gotrue::{GoTrueConfig, GoTrueStandIn};
use chatvault_test_services::postgres::SupabaseFixture;
use chatvault_test_services::project_front::ProjectFront;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

fn run(
    server: &str,
    anon_key: &str,
    dir: &std::path::Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chatvault"));
    command
        .args(args)
        // No unlock agent: these tests unlock every time (tests/agent.rs covers it).
        .env("CHATVAULT_NO_AGENT", "1")
        .arg("--replica")
        .arg(dir.join("laptop.redb"))
        .env("CHATVAULT_SERVER", server)
        .env("CHATVAULT_PASSPHRASE", "login test passphrase")
        .env("CHATVAULT_SCRYPT_WORK_FACTOR", "4")
        .env("CHATVAULT_CONFIG_DIR", dir.join("config"))
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("SUPABASE_ANON_KEY", anon_key)
        .env_remove("SUPABASE_ACCESS_TOKEN")
        .env_remove("CHATVAULT_SUPABASE_EMAIL")
        .env_remove("CHATVAULT_SUPABASE_PASSWORD")
        .stdin(Stdio::null());
    for (name, value) in envs {
        command.env(name, value);
    }
    command.output().expect("run chatvault")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "chatvault failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_keeps_a_session_that_later_commands_use_and_logout_ends_it() {
    let fixture = match SupabaseFixture::shared(chatvault_supabase::MIGRATIONS).await {
        Ok(fixture) => fixture,
        Err(e) => panic!("this test needs PostgreSQL (install postgresql-15): {e}"),
    };
    let auth = GoTrueStandIn::start(GoTrueConfig::new(Arc::new(move |claims| {
        fixture.sign(claims)
    })))
    .expect("Auth stand-in starts");
    let front = ProjectFront::start(&fixture.url, &auth.url()).expect("project front starts");
    let server = format!("supabase+{}", front.url());
    let email = format!("{}@example.org", uuid::Uuid::now_v7().simple());
    auth.add_user(&email, "correct horse battery");
    let dir = tempfile::tempdir().expect("temp dir");
    let key = fixture.anon_key.clone();
    let (server, dir_path) = (server.clone(), dir.path().to_path_buf());
    tokio::task::spawn_blocking(move || {
        // Not signed in yet: a usage of the account's credentials is asked for.
        let out = run(&server, &key, &dir_path, &["ls"], &[]);
        assert_eq!(
            out.status.code(),
            Some(3),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        let out = run(
            &server,
            &key,
            &dir_path,
            &["login", "--email", &email],
            &[("CHATVAULT_SUPABASE_PASSWORD", "correct horse battery")],
        );
        assert!(stdout(&out).contains(&format!("signed in to {server} as {email}")));

        // Later commands need no password: the stored session signs in.
        let id = stdout(&run(
            &server,
            &key,
            &dir_path,
            &["new", "From the CLI"],
            &[],
        ));
        let listed = stdout(&run(&server, &key, &dir_path, &["ls", "--full-ids"], &[]));
        assert!(listed.contains("From the CLI"), "{listed}");
        assert!(listed.contains(id.trim()), "{listed}");

        let out = run(&server, &key, &dir_path, &["logout"], &[]);
        assert!(stdout(&out).contains("signed out of"));
        let out = run(&server, &key, &dir_path, &["ls"], &[]);
        assert_eq!(
            out.status.code(),
            Some(3),
            "signed out: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = run(&server, &key, &dir_path, &["logout"], &[]);
        assert!(stdout(&out).contains("not signed in"));
    })
    .await
    .expect("CLI runs");
    assert_eq!(auth.stats().password_grants, 1);
}
