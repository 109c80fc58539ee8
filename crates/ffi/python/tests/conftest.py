import os
import pathlib
import sys

import pytest

import chatvault

sys.path.insert(0, os.path.dirname(__file__))

PASSPHRASE = "correct horse battery staple"
REPO = pathlib.Path(__file__).resolve().parents[4]
CHATGPT_EXPORT = REPO / "crates/chatvault/tests/fixtures/chatgpt-conversations.json"


async def open_device(folder: pathlib.Path, device: str, passphrase: str = PASSPHRASE, **extra):
    """Opens the vault in ``folder/server`` as ``device``."""
    return await chatvault.open_vault(
        chatvault.OpenOptions(
            storage_url=f"file://{folder / 'server'}",
            replica_path=str(folder / f"{device}.redb"),
            passphrase=passphrase,
            scrypt_work_factor=10,
            **extra,
        )
    )


@pytest.fixture
def folder(tmp_path):
    return tmp_path
