"""Bindings bench (issue 27): the same operations from Python and from Rust
in one run, printed as a markdown table.

    python bench.py --rust-bin <target>/release/examples/bench_rust [--chats 10000] [--adds 10000]

Needs the `chatvault` wheel built with `maturin build --release` installed
in this Python, and the Rust side built with
`cargo build --release -p chatvault-ffi --example bench_rust`
(`just bench-python` does all of it). Asserts nothing: it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

PASSPHRASE = "bench passphrase"


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def python_side(folder: str, replica: str, adds: int) -> dict:
    import chatvault

    start = time.perf_counter()
    vault = await chatvault.open_vault(
        chatvault.OpenOptions(
            storage_url=f"file://{folder}/server",
            replica_path=replica,
            passphrase=PASSPHRASE,
            scrypt_work_factor=10,
        )
    )
    opened_s = time.perf_counter() - start
    sidebar = vault.sidebar()
    titles = [s.title for s in sidebar]
    open_sidebar_s = time.perf_counter() - start
    targets = [s.id for s in sidebar[:100]]
    start = time.perf_counter()
    for i in range(adds):
        await vault.add_message(targets[i % len(targets)], chatvault.Role.USER, f"added {i}")
    adds_s = time.perf_counter() - start
    await vault.close()
    return {
        "chats": len(titles),
        "open_s": opened_s,
        "open_sidebar_s": open_sidebar_s,
        "adds": adds,
        "adds_s": adds_s,
    }


def memory_child(folder: str, replica: str) -> None:
    """Run in a fresh interpreter: RSS before import, after, holding the sidebar."""
    before = rss_kib()
    import chatvault

    imported = rss_kib()

    async def hold():
        vault = await chatvault.open_vault(
            chatvault.OpenOptions(
                storage_url=f"file://{folder}/server",
                replica_path=replica,
                passphrase=PASSPHRASE,
                scrypt_work_factor=10,
            )
        )
        sidebar = vault.sidebar()
        return vault, sidebar

    vault, sidebar = asyncio.run(hold())
    holding = rss_kib()
    print(json.dumps({"before": before, "imported": imported, "holding": holding, "chats": len(sidebar)}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rust-bin", required=True)
    parser.add_argument("--chats", type=int, default=10_000)
    parser.add_argument("--adds", type=int, default=10_000)
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return

    folder = tempfile.mkdtemp(prefix="chatvault-bench-")
    try:
        start = time.perf_counter()
        subprocess.run([args.rust_bin, "setup", folder, str(args.chats)], check=True, capture_output=True)
        print(f"seeded {args.chats} chats in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        for name in ("rust", "python", "memory"):
            shutil.copy(f"{folder}/seed.redb", f"{folder}/{name}.redb")

        out = subprocess.run(
            [args.rust_bin, "measure", folder, f"{folder}/rust.redb", str(args.adds)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        rust = json.loads(out.strip().splitlines()[-1])
        py = asyncio.run(python_side(folder, f"{folder}/python.redb", args.adds))
        mem_out = subprocess.run(
            [sys.executable, __file__, "--rust-bin", args.rust_bin, "--memory-child", folder, f"{folder}/memory.redb"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        mem = json.loads(mem_out.strip().splitlines()[-1])
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    assert rust["chats"] == py["chats"] == mem["chats"] == args.chats, (rust, py, mem)
    rust_rate = rust["adds"] / rust["adds_s"]
    py_rate = py["adds"] / py["adds_s"]
    print(f"### Python bindings vs Rust ({args.chats} chats, {args.adds} add_message calls)\n")
    print("| operation | Rust | Python | Python / Rust | goal |")
    print("|---|---|---|---|---|")
    print(
        f"| open the vault and read the sidebar | {rust['open_sidebar_s'] * 1000:.1f} ms "
        f"| {py['open_sidebar_s'] * 1000:.1f} ms | {py['open_sidebar_s'] / rust['open_sidebar_s']:.2f}× | ≤ 2× |"
    )
    print(
        f"| of which: reading the sidebar into {args.chats} records | "
        f"{(rust['open_sidebar_s'] - rust['open_s']) * 1000:.1f} ms "
        f"| {(py['open_sidebar_s'] - py['open_s']) * 1000:.1f} ms | | |"
    )
    print(
        f"| {args.adds} add_message, one after another | {rust_rate:,.0f}/s "
        f"| {py_rate:,.0f}/s | {py_rate / rust_rate * 100:.0f} % of the rate | ≥ 50 % |"
    )
    print()
    print("| Python process RSS | MiB |")
    print("|---|---|")
    print(f"| interpreter alone | {mem['before'] / 1024:.1f} |")
    print(f"| after `import chatvault` | {mem['imported'] / 1024:.1f} |")
    print(f"| holding an open vault and its {mem['chats']}-chat sidebar | {mem['holding'] / 1024:.1f} |")


if __name__ == "__main__":
    main()
