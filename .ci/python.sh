#!/usr/bin/env bash
# The Python bindings (crates/ffi, issue 27): builds the `chatvault` wheel
# with maturin (a debug build: the tests need no speed), installs it into a
# fresh virtual environment with pytest, and runs the pytest suite (two
# devices on one folder, events, errors, import, threads and asyncio, and
# the Storage conformance suite against Python backends). Needs python3
# with venv and pip, and the registries (PyPI for maturin and pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if python3 -m venv "$work/venv" >/dev/null 2>&1; then
    py="$work/venv/bin/python"
else
    # A Python without venv (Debian's without python3-venv): the machine's
    # own site-packages, which CI owns.
    echo "python.sh: no venv module; installing into the system Python" >&2
    py="$(command -v python3)"
    export PIP_BREAK_SYSTEM_PACKAGES=1
fi
"$py" -m pip install -q --disable-pip-version-check 'maturin>=1.5,<2' 'pytest>=7'
# No --strip: it strips the UniFFI metadata symbols the Python module is
# generated from, and the wheel then ships a stale or empty module.
(cd crates/ffi && "$py" -m maturin build --out "$work/wheels")
"$py" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$work"/wheels/chatvault-*.whl
# Run from the repository root so that `import chatvault` is the installed
# wheel, not the source folder crates/ffi/python/chatvault.
"$py" -m pytest -q crates/ffi/python/tests "$@"
