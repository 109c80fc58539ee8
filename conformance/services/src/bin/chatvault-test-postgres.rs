//! `chatvault-test-postgres -- <command> [args…]` runs a command against a
//! throwaway PostgreSQL shaped like a fresh Supabase project, then removes
//! the database.
//!
//! The cluster comes from the local PostgreSQL binaries (under root it runs
//! as `nobody`; see `chatvault_test_services::postgres`), gets the
//! roles, `auth` schema and default privileges a Supabase project has, and
//! no migrations: it is what `supabase db push` meets on a new project. The
//! command finds it in `CHATVAULT_TEST_PG_URL`
//! (`postgres://postgres:…@127.0.0.1:<port>/postgres?sslmode=disable`, a
//! superuser, the form the test fixtures and the Supabase CLI's `--db-url`
//! take). The program exits with the command's status. CI uses it in
//! `.ci/supabase-cli.sh`.

use chatvault_test_services::postgres::{prepare_supabase_project, Postgres};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match args.iter().position(|a| a == "--") {
        Some(at) if at + 1 < args.len() => args[at + 1..].to_vec(),
        _ => {
            eprintln!("usage: chatvault-test-postgres -- <command> [args…]");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("chatvault-test-postgres: cannot start a tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let postgres = match runtime.block_on(async {
        let postgres = Postgres::start_local().await?;
        prepare_supabase_project(&postgres.connect().await?).await?;
        Ok::<_, chatvault_core::Error>(postgres)
    }) {
        Ok(postgres) => postgres,
        Err(e) => {
            eprintln!("chatvault-test-postgres: no PostgreSQL (install postgresql-15): {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "chatvault-test-postgres: {}, shaped like a Supabase project",
        postgres.description()
    );
    let status = Command::new(&command[0])
        .args(&command[1..])
        .env(
            "CHATVAULT_TEST_PG_URL",
            format!("{}?sslmode=disable", postgres.url()),
        )
        .status();
    // Stops and removes the cluster before reporting.
    drop(postgres);
    drop(runtime);
    match status {
        Ok(status) => match status.code() {
            Some(0) => ExitCode::SUCCESS,
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => {
                eprintln!(
                    "chatvault-test-postgres: {:?} ended by a signal",
                    command[0]
                );
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("chatvault-test-postgres: cannot run {:?}: {e}", command[0]);
            ExitCode::FAILURE
        }
    }
}
