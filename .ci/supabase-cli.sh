#!/usr/bin/env bash
# The Supabase migrations as users deploy them: installs the pinned Supabase
# CLI from npm, applies backends/supabase/supabase/migrations with
# `supabase db push --db-url` to a throwaway PostgreSQL shaped like a fresh
# Supabase project (roles, `auth` schema; made by chatvault-test-services'
# `chatvault-test-postgres` from Debian's postgresql-15 binaries), then runs
# the Supabase conformance suite on that database with the fixture told not
# to migrate it (CHATVAULT_TEST_PG_MIGRATIONS=applied: it checks that the
# CLI's history records every migration instead).
# Runs as root on a fresh Debian machine; `.ci/run` calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

cli_version=2.117.0   # newer releases are not installable here (issue 11)
cli_dir="${CHATVAULT_SUPABASE_CLI_DIR:-$root/target/supabase-cli}"

if ! command -v npm >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
[ -x /usr/lib/postgresql/15/bin/initdb ] || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null
}

supabase="$cli_dir/node_modules/.bin/supabase"
if [ ! -x "$supabase" ] || [ "$("$supabase" --version 2>/dev/null)" != "$cli_version" ]; then
    mkdir -p "$cli_dir"
    (cd "$cli_dir" && npm i -E --no-audit --no-fund --loglevel=error "supabase@$cli_version")
fi
echo "Supabase CLI $("$supabase" --version)"

cargo build -q -p chatvault-test-services --bin chatvault-test-postgres

# Inside: CHATVAULT_TEST_PG_URL names the fresh database (a superuser).
export SUPABASE_CLI="$supabase"
"$root/target/debug/chatvault-test-postgres" -- bash -c '
    set -euo pipefail
    push() { "$SUPABASE_CLI" db push --workdir backends/supabase --db-url "$CHATVAULT_TEST_PG_URL" --yes 2>&1; }
    push
    # A second push finds nothing to do: the CLI reads back its own history.
    again=$(push)
    echo "$again"
    grep -q "Remote database is up to date" <<<"$again"
    CHATVAULT_TEST_PG_MIGRATIONS=applied \
        cargo test --all-features -p chatvault-supabase --test conformance
'
