# Developer recipes. `just --list` shows them; install just with `cargo install just`.

# Unit, integration and conformance tests of the whole workspace.
test:
    cargo test --workspace --all-features

# Lints exactly as CI runs them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --all-features -- -D warnings
    cargo clippy -p chatvault-core --no-default-features --all-targets -- -D warnings

# Formats every crate.
fmt:
    cargo fmt --all

# Criterion benchmarks (performance targets live here, never in tests).
bench:
    cargo bench --workspace

# Builds the registry-free test images (chatvault-test/s3, chatvault-test/postgres).
# Needs root, debootstrap and a running Docker engine; pass --force to rebuild.
images *args:
    bash conformance/services/images/build.sh {{args}}

# The conformance suite against every backend. With the local images built
# (`just images`) the S3 and PostgreSQL fixtures run in containers; without
# Docker they fall back to in-process stand-ins and say so in the first line.
# Extra arguments go to the test binaries, e.g. `just conformance storage::put`.
conformance *args:
    CHATVAULT_TEST_S3_IMAGE="${CHATVAULT_TEST_S3_IMAGE:-chatvault-test/s3:latest}" \
    CHATVAULT_TEST_PG_IMAGE="${CHATVAULT_TEST_PG_IMAGE:-chatvault-test/postgres:latest}" \
    cargo test --no-fail-fast --all-features --test conformance --test custom_backend \
        -p chatvault-conformance -p chatvault-object-store -p chatvault-fs -p chatvault-s3 -p chatvault-supabase \
        -- {{args}}

# Long attack runs (issue 14). Crash trials: SIGKILL a saving, syncing child
# at random points, 200 times on the local folder and 200 over S3 (CI runs 20
# and 10). Replay one with CHATVAULT_CRASH_SEED.
crash-trials trials="200":
    CHATVAULT_CRASH_TRIALS={{trials}} cargo test -p chatvault --test crash_trials -- --nocapture

# Attachment crash trials: SIGKILL a child attaching files (0 to 3.5 MB),
# sending them and syncing, at random points, 100 times on the local folder
# (CI runs 12). Replay one with CHATVAULT_ATTACH_CRASH_SEED.
attachment-crash-trials trials="100":
    CHATVAULT_ATTACH_CRASH_TRIALS={{trials}} cargo test -p chatvault --test attachment_crash_trials attachments_that_returned -- --nocapture

# Blob collection crash trials: SIGKILL a child collecting attachment blobs
# at random points while another device names an unnamed file again, 50
# times (CI runs 4). Replay with CHATVAULT_GC_CRASH_SEED.
gc-crash-trials trials="50":
    CHATVAULT_GC_CRASH_TRIALS={{trials}} cargo test -p chatvault --test attachment_crash_trials blob_collections -- --nocapture

# Re-seal crash trials: SIGKILL a child re-sealing 120 chats after a key
# rotation at seeded points, 50 times (CI runs 5). Replay with CHATVAULT_RESEAL_SEED.
reseal-trials trials="50":
    CHATVAULT_RESEAL_TRIALS={{trials}} cargo test -p chatvault --test reseal_crash -- --nocapture

# Convergence under chaos and partitions: 3 devices x 1,000 operations
# (CI runs 3 x 200). Replay a run with CHATVAULT_SIM_SEED.
convergence ops="1000":
    CHATVAULT_SIM_OPS={{ops}} cargo test -p chatvault --test convergence -- --nocapture

# Convergence over a simulated file-sync service (delays, reordering, partial
# files, duplicates, resurrected deletes, conflict copies in each service's
# naming): 3 devices x 1,000 operations per seed (CI runs 3 x 60 over 5 seeds).
# Replay a run with CHATVAULT_SIM_SEED.
file-sync-sim ops="1000":
    CHATVAULT_SIM_OPS={{ops}} cargo test -p chatvault --test file_sync_sim -- --nocapture

# The file-sync benchmark: idle poll on a folder with 3 device logs and 10k
# chats vs read_dir of the logs, before and after compaction; write-to-
# appearance through real Syncthing vs Syncthing's own copy time.
# Flags, e.g. `just bench-file-sync --chats 1000 --runs 5`.
bench-file-sync *args:
    cargo bench -p chatvault --bench file_sync -- {{args}}

# The scale benchmark: one markdown table per backend (local folder, S3,
# Supabase), each figure beside its baseline. Sizes and backends are flags,
# e.g. `just bench-scale --chats 1000,10000 --backends fs,s3 --import 1000`.
bench-scale *args:
    cargo bench -p chatvault --bench scale -- {{args}}

# The attachment benchmark: attach, upload and read back one large file on
# the local folder, beside `std::fs::copy`, with peak RSS after each step.
bench-attachments mib="256" backends="fs,s3":
    cargo bench -p chatvault --bench attachments -- --mib {{mib}} --backends {{backends}}

# 50 concurrent writers on one vault, 10 saves each (CI runs 4 each); prints saves/s.
many-writers writes="10":
    CHATVAULT_WRITES={{writes}} cargo test -p chatvault --test many_writers -- --nocapture --test-threads=1

# Stable fuzz drivers (proptest) over every decoder of outside bytes, long run.
fuzz-long cases="200000":
    PROPTEST_CASES={{cases}} cargo test --release -p chatvault-core --test decoders_never_panic
    PROPTEST_CASES={{cases}} cargo test --release -p chatvault-object-store -p chatvault-supabase --lib fuzz
    PROPTEST_CASES={{cases}} cargo test --release -p chatvault-cli --bin chatvault import::fuzz

# Coverage-guided fuzzing with cargo fuzz (needs a nightly toolchain and
# `cargo install cargo-fuzz`): each target for `seconds`, keeping its corpus
# in fuzz/corpus/<target>. Crashes land in fuzz/artifacts/<target>.
fuzz-nightly seconds="600":
    for target in $(cargo +nightly fuzz list); do \
        cargo +nightly fuzz run -O "$target" -- -max_total_time={{seconds}} -rss_limit_mb=4096 || exit 1; \
    done

# Python bindings (crates/ffi): builds the wheel with maturin into a fresh
# venv, installs it and runs the pytest suite, as CI does. Extra arguments
# go to pytest, e.g. `just python -k conformance`.
python *args:
    bash .ci/python.sh {{args}}

# Kotlin and Swift sources of the bindings: checks that crates/ffi/bindings
# is current; `just bindings --write` regenerates it after an interface change.
bindings mode="--check":
    bash .ci/bindings.sh {{mode}}

# Bindings bench: open a 10k-chat vault and read the sidebar, 10,000
# add_message calls, and the RSS of a Python process holding the sidebar,
# from Python beside Rust in one run (release builds; prints a table).
bench-python chats="10000" adds="10000":
    #!/usr/bin/env bash
    set -euo pipefail
    target="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
    cargo build --release -p chatvault-ffi --example bench_rust
    work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install -q maturin
    (cd crates/ffi && "$work/venv/bin/maturin" build --release --out "$work/wheels")
    "$work/venv/bin/pip" install -q "$work"/wheels/chatvault-*.whl
    "$work/venv/bin/python" crates/ffi/bench.py --rust-bin "$target/release/examples/bench_rust" --chats {{chats}} --adds {{adds}}
