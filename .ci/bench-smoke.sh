#!/usr/bin/env bash
# CI smoke run of the scale benchmark at its smallest size, on the local
# folder and S3 (the fixture picks the test image, an endpoint from the
# environment, or the in-process stand-in). It asserts no time: only that
# the bench runs to the end and prints its tables, so it cannot rot.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
cargo bench -p chatvault --bench scale -- \
    --chats 100 --k 1,10 --import 50 --reseal 50 --repeat 1 --backends fs,s3 | tee "$out"
for table in "### local folder" "### S3"; do
    grep -qF "$table" "$out" || { echo "bench-smoke: no table for ${table#\#\#\# }" >&2; exit 1; }
done
grep -q '^| rotate, then `reseal_stale`' "$out" || { echo "bench-smoke: no re-seal table" >&2; exit 1; }
grep -q '^| idle poll, chatvault' "$out" || { echo "bench-smoke: the tables have no rows" >&2; exit 1; }
if grep -q '^NOT RUN' "$out"; then echo "bench-smoke: a backend did not run" >&2; exit 1; fi
echo "bench-smoke: scale bench ran and printed its tables"

# The attachment bench at a small size: it must run to the end and print a
# table per backend (it asserts the bytes read back, no time).
cargo bench -p chatvault --bench attachments -- --mib 8 --dedup-mib 8 --backends fs,s3 | tee "$out"
for table in "### local folder" "### S3"; do
    grep -qF "$table" "$out" || { echo "bench-smoke: no attachment table for ${table#\#\#\# }" >&2; exit 1; }
done
grep -q '^| download (`save_attachment`)' "$out" || { echo "bench-smoke: the attachment table has no rows" >&2; exit 1; }
grep -q 'attached to ten chats: the server holds' "$out" || { echo "bench-smoke: no deduplication figure" >&2; exit 1; }
grep -q 'with 0 blob requests' "$out" || { echo "bench-smoke: a new device fetched blobs while syncing 100 images" >&2; exit 1; }
if grep -q '^NOT RUN' "$out"; then echo "bench-smoke: a backend did not run the attachment bench" >&2; exit 1; fi
echo "bench-smoke: attachment bench ran and printed its tables"
