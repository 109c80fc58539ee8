#!/usr/bin/env bash
# Kotlin and Swift sources of the bindings (crates/ffi, issue 27), generated
# by the crate's own uniffi-bindgen from the built library, as a mobile app
# consumes them. They cannot be compiled on this machine kind (Debian's
# Kotlin is 1.3, there is no Swift toolchain): this checks they generate and
# that the copies committed under crates/ffi/bindings are current.
#
#   .ci/bindings.sh           check (CI)
#   .ci/bindings.sh --write   regenerate the committed copies
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:---check}"
target="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
cargo build -q -p chatvault-ffi --lib --bin uniffi-bindgen
library="$target/debug/libchatvault_ffi.so"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for language in kotlin swift; do
    "$target/debug/uniffi-bindgen" generate --no-format --library "$library" \
        --language "$language" --out-dir "$out/$language"
done
test -s "$out/kotlin/org/chatvault/chatvault_ffi.kt" || { echo "bindings: no Kotlin source" >&2; exit 1; }
test -s "$out/swift/ChatVault.swift" || { echo "bindings: no Swift source" >&2; exit 1; }
case "$mode" in
    --write)
        rm -rf crates/ffi/bindings
        mkdir -p crates/ffi/bindings
        cp -r "$out/kotlin" "$out/swift" crates/ffi/bindings/
        echo "bindings: wrote crates/ffi/bindings/{kotlin,swift}"
        ;;
    --check)
        if ! diff -r "$out" crates/ffi/bindings >/dev/null; then
            diff -r "$out" crates/ffi/bindings | head -40 >&2
            echo "bindings: crates/ffi/bindings is out of date; run .ci/bindings.sh --write (just bindings)" >&2
            exit 1
        fi
        echo "bindings: Kotlin and Swift sources generate and are current"
        ;;
    *) echo "usage: $0 [--check|--write]" >&2; exit 2 ;;
esac
