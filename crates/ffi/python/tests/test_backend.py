"""Storage backends written in Python: the conformance suite and a vault."""

import asyncio

import chatvault
import chatvault.conformance
from chatvault import Role

from memory_backend import BrokenBackend, MemoryBackend

from conftest import PASSPHRASE


def test_the_python_memory_backend_passes_the_conformance_suite():
    report = chatvault.conformance.run(MemoryBackend())
    print(report)
    assert report.ok, str(report)
    assert len(report.results) == len(chatvault.conformance.contracts())
    assert len(report.passed) >= 40
    names = {r.name for r in report.passed}
    assert "storage::put_absent_conflicts_when_record_exists" in names
    # The end-to-end sync contracts: devices through the facade over it.
    assert "sync::offline_edits_on_three_devices_converge" in names
    assert "sync::a_wrong_passphrase_is_refused_with_wrong_key" in names


def test_a_broken_python_backend_gets_named_failures():
    report = chatvault.conformance.run(BrokenBackend(), filter="storage::put")
    print(report)
    failed = {r.name for r in report.failed}
    assert "storage::put_absent_conflicts_when_record_exists" in failed
    for result in report.failed:
        assert result.detail, result.name
    assert not report.ok


def test_a_vault_runs_on_a_python_backend(tmp_path):
    backend = MemoryBackend()

    async def main():
        options = dict(passphrase=PASSPHRASE, scrypt_work_factor=10, storage_url="")
        laptop = await chatvault.open_vault_with_backend(
            backend.open("mine"),
            chatvault.OpenOptions(replica_path=str(tmp_path / "laptop.redb"), **options),
        )
        phone = await chatvault.open_vault_with_backend(
            backend.open("mine"),
            chatvault.OpenOptions(replica_path=str(tmp_path / "phone.redb"), **options),
        )
        chat = await laptop.new_chat("Stored by Python")
        await laptop.add_message(chat, Role.USER, "hello")
        await laptop.sync_now()
        await phone.sync_now()
        full = await phone.load_chat(chat)
        assert [m.content for m in full.messages] == ["hello"]
        assert backend.vaults["mine"].keyring is not None
        await laptop.close()
        await phone.close()

    asyncio.run(main())
