"""The facade from Python: two devices, events, errors, import, keys."""

import asyncio
import json
import queue
import threading

import pytest

import chatvault
from chatvault import Role, VaultError, VaultEvent

from conftest import CHATGPT_EXPORT, PASSPHRASE, open_device


def run(coro):
    return asyncio.run(coro)


class Collector(chatvault.ChangeListener):
    def __init__(self):
        self.events = queue.Queue()

    def on_event(self, event):
        self.events.put(event)

    def wait_for(self, predicate, timeout=20.0):
        seen = []
        deadline = threading.Event()
        timer = threading.Timer(timeout, deadline.set)
        timer.start()
        try:
            while not deadline.is_set():
                try:
                    event = self.events.get(timeout=0.1)
                except queue.Empty:
                    continue
                seen.append(event)
                if predicate(event):
                    return event
        finally:
            timer.cancel()
        raise AssertionError(f"no matching event within {timeout}s; saw {seen}")


def test_two_vaults_on_one_folder_sync_a_chat_both_ways(folder):
    async def main():
        laptop = await open_device(folder, "laptop")
        phone = await open_device(folder, "phone")
        chat = await laptop.new_chat("Trip plans")
        await laptop.add_message(chat, Role.USER, "Book the train")
        await laptop.sync_now()
        await phone.sync_now()
        assert [s.title for s in phone.sidebar()] == ["Trip plans"]
        full = await phone.load_chat(chat)
        assert [m.content for m in full.messages] == ["Book the train"]

        await phone.add_message(chat, Role.ASSISTANT, "Booked: 9:12 to Zürich")
        await phone.rename(chat, "Trip to Zürich")
        await phone.star(chat, True)
        await phone.sync_now()
        await laptop.sync_now()
        summary = laptop.sidebar()[0]
        assert summary.title == "Trip to Zürich"
        assert summary.starred
        assert summary.message_count == 2
        full = await laptop.load_chat(chat)
        assert [(m.role, m.content) for m in full.messages] == [
            (Role.USER, "Book the train"),
            (Role.ASSISTANT, "Booked: 9:12 to Zürich"),
        ]
        assert laptop.status() == chatvault.Status.SYNCED()
        assert laptop.pending_changes() == 0

        # Deletions travel too.
        await laptop.delete_message(chat, full.messages[0].id)
        await laptop.sync_now()
        await phone.sync_now()
        assert [m.content for m in (await phone.load_chat(chat)).messages] == [
            "Booked: 9:12 to Zürich"
        ]
        await phone.delete_chat(chat)
        await phone.sync_now()
        await laptop.sync_now()
        assert laptop.sidebar() == []
        with pytest.raises(VaultError.NotFound):
            await laptop.load_chat(chat)
        await laptop.close()
        await phone.close()

    run(main())


def test_an_event_arrives_for_a_change_made_on_the_other_device(folder):
    async def main():
        laptop = await open_device(folder, "laptop")
        phone = await open_device(folder, "phone")
        listener = Collector()
        subscription = phone.subscribe(listener)
        phone.start_sync(100)
        assert phone.is_syncing()
        chat = await laptop.new_chat("From the laptop")
        await laptop.sync_now()
        event = await asyncio.to_thread(
            listener.wait_for,
            lambda e: isinstance(e, VaultEvent.CHAT_UPSERTED) and e.chat == chat,
        )
        assert event.chat == chat
        assert [s.title for s in phone.sidebar()] == ["From the laptop"]
        subscription.cancel()
        await phone.stop_sync()
        assert not phone.is_syncing()
        await laptop.close()
        await phone.close()

    run(main())


def test_a_wrong_passphrase_raises_wrong_key(folder):
    async def main():
        first = await open_device(folder, "laptop")
        await first.new_chat("secret")
        await first.sync_now()
        with pytest.raises(VaultError.WrongKey) as caught:
            await open_device(folder, "thief", passphrase="not the passphrase")
        assert isinstance(caught.value, VaultError)
        # The same one-line message the Rust library prints.
        assert str(caught.value).startswith("wrong key: ")
        assert str(caught.value).endswith("check the passphrase or identity for this vault")
        await first.close()

    run(main())


def test_invalid_input_is_its_own_exception(folder):
    async def main():
        vault = await open_device(folder, "laptop")
        with pytest.raises(VaultError.InvalidInput) as caught:
            await vault.add_message("not-an-id", Role.USER, "x")
        assert str(caught.value) == 'invalid input: "not-an-id" is not a chat id'
        with pytest.raises(VaultError.InvalidInput):
            await chatvault.open_vault(
                chatvault.OpenOptions(
                    storage_url=f"file://{folder / 'server'}",
                    replica_path=str(folder / "x.redb"),
                )
            )
        await vault.close()

    run(main())


def test_a_chatgpt_export_imports_and_is_searchable_and_exportable(folder):
    async def main():
        vault = await open_device(folder, "laptop")
        report = await vault.import_file(str(CHATGPT_EXPORT), False)
        assert report.added == 2
        assert report.updated == 0
        titles = sorted(s.title for s in vault.sidebar())
        assert titles == ["Empty-system scaffolding only", "Trip to München"]
        # Again: nothing new.
        again = await vault.import_file(str(CHATGPT_EXPORT), False)
        assert (again.added, again.unchanged) == (0, 2)

        hits = await vault.search("munchen")
        assert hits and hits[0].title == "Trip to München"

        exported = json.loads(await vault.export_json())
        assert sorted(c["title"] for c in exported["chats"]) == titles
        age_file = await vault.export_age("backup passphrase", 10)
        assert age_file.startswith(b"age-encryption.org/v1")
        await vault.sync_now()
        await vault.close()
        del vault

        report = await chatvault.verify_vault(
            f"file://{folder / 'server'}", str(folder / "verifier.redb"), PASSPHRASE
        )
        assert report.ok, report.problems
        assert report.server_records == 2

    run(main())


def test_branches_regenerate_and_select(folder):
    async def main():
        vault = await open_device(folder, "laptop")
        chat = await vault.new_chat("Haiku")
        await vault.add_message(chat, Role.USER, "Write a haiku")
        answer = await vault.add_message(chat, Role.ASSISTANT, "first try")
        second = await vault.regenerate(chat, answer, "second try")
        shown = await vault.load_chat(chat)
        assert shown.branched
        assert [m.content for m in shown.messages] == ["Write a haiku", "second try"]
        alternatives = await vault.alternatives(chat, second)
        assert (len(alternatives.messages), alternatives.shown, alternatives.position) == (2, 2, 2)
        await vault.select_branch(chat, answer)
        assert [m.content for m in (await vault.load_chat(chat)).messages][-1] == "first try"
        await vault.edit_message(chat, answer, "first try, edited")
        assert (await vault.load_chat(chat)).messages[-1].content == "first try, edited"
        await vault.close()

    run(main())


def test_keys_recovery_key_and_passphrase_change(folder):
    async def main():
        laptop = await open_device(folder, "laptop")
        await laptop.new_chat("kept")
        await laptop.sync_now()
        kinds = [p.kind for p in await laptop.list_protections()]
        assert kinds == [chatvault.ProtectionKind.PASSPHRASE]
        recovery = await laptop.create_recovery_key()
        assert recovery.startswith("AGE-SECRET-KEY-1")
        kinds = sorted(str(p.kind) for p in await laptop.list_protections())
        assert len(kinds) == 2
        await laptop.change_passphrase("a new passphrase")
        await laptop.sync_now()

        with pytest.raises(VaultError.WrongKey):
            await open_device(folder, "phone", passphrase=PASSPHRASE)
        phone = await open_device(folder, "phone", passphrase="a new passphrase")
        await phone.sync_now()
        assert [s.title for s in phone.sidebar()] == ["kept"]
        tablet = await open_device(folder, "tablet", passphrase=recovery)
        await tablet.sync_now()
        assert [s.title for s in tablet.sidebar()] == ["kept"]
        assert await laptop.rotate_key() >= 1
        for v in (laptop, phone, tablet):
            await v.close()

    run(main())


def test_threads_and_asyncio_share_a_vault_without_deadlock(folder):
    vault = run(open_device(folder, "laptop"))
    chat = run(vault.new_chat("busy"))
    listener = Collector()
    subscription = vault.subscribe(listener)
    errors = []

    def writer(n):
        # Each thread drives its own event loop; all share one vault.
        async def write():
            for i in range(20):
                await vault.add_message(chat, Role.USER, f"thread {n} message {i}")
                vault.sidebar()

        try:
            asyncio.run(write())
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()

    async def concurrently():
        await asyncio.gather(
            *(vault.add_message(chat, Role.ASSISTANT, f"gathered {i}") for i in range(20))
        )

    run(concurrently())
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive(), "a writer thread is stuck"
    assert errors == []
    full = run(vault.load_chat(chat))
    assert len(full.messages) == 4 * 20 + 20
    # The listener (called back on a library thread) saw the writes.
    listener.wait_for(lambda e: isinstance(e, VaultEvent.CHAT_UPSERTED))
    subscription.cancel()
    run(vault.close())


def test_events_as_an_async_iterator(folder):
    async def main():
        laptop = await open_device(folder, "laptop")
        phone = await open_device(folder, "phone")
        phone.start_sync(100)
        stream = chatvault.events(phone)
        waiter = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0.2)  # the subscription is made at the first step
        chat = await laptop.new_chat("async")
        await laptop.sync_now()
        seen = []
        while True:
            event = await asyncio.wait_for(waiter, 20)
            seen.append(event)
            if isinstance(event, VaultEvent.CHAT_UPSERTED) and event.chat == chat:
                break
            waiter = asyncio.ensure_future(stream.__anext__())
        await stream.aclose()
        await phone.stop_sync()
        await laptop.close()
        await phone.close()

    run(main())


def test_an_identity_opens_the_vault_and_a_malformed_one_is_refused(folder):
    async def main():
        laptop = await open_device(folder, "laptop")
        await laptop.new_chat("kept")
        await laptop.sync_now()
        recovery = await laptop.create_recovery_key()
        phone = await chatvault.open_vault(
            chatvault.OpenOptions(
                storage_url=f"file://{folder / 'server'}",
                replica_path=str(folder / "phone.redb"),
                identity=recovery,
            )
        )
        await phone.sync_now()
        assert [s.title for s in phone.sidebar()] == ["kept"]
        with pytest.raises(VaultError.InvalidInput):
            await chatvault.open_vault(
                chatvault.OpenOptions(
                    storage_url=f"file://{folder / 'server'}",
                    replica_path=str(folder / "tablet.redb"),
                    identity="not an identity",
                )
            )
        await laptop.close()
        await phone.close()

    run(main())


def test_an_attachment_travels_to_the_other_device(folder):
    async def main():
        laptop = await open_device(folder, "laptop")
        phone = await open_device(folder, "phone")
        ticket = folder / "ticket.png"
        payload = bytes(range(256)) * 5000
        ticket.write_bytes(payload)
        chat = await laptop.new_chat("Ticket")
        attachment = await laptop.attach_file(chat, str(ticket))
        assert (attachment.name, attachment.media_type, attachment.size) == (
            "ticket.png",
            "image/png",
            len(payload),
        )
        await laptop.add_message_with_attachments(chat, Role.USER, "My ticket", [attachment])
        await laptop.sync_now()
        await phone.sync_now()
        message = (await phone.load_chat(chat)).messages[0]
        assert message.attachments == [attachment]
        assert await phone.attachment_bytes(message.attachments[0]) == payload
        saved = folder / "saved.png"
        assert await phone.save_attachment(message.attachments[0], str(saved)) == len(payload)
        assert saved.read_bytes() == payload
        await laptop.close()
        await phone.close()

    run(main())


def test_a_streamed_reply_reaches_the_other_device_after_the_flush(folder):
    async def main():
        laptop = await open_device(folder, "laptop")
        phone = await open_device(folder, "phone")
        chat = await laptop.new_chat("Streamed")
        reply = await laptop.add_message(chat, Role.ASSISTANT, "")
        for token in ["Once ", "upon ", "a ", "time"]:
            await laptop.append_to_message(chat, reply, token)
        shown = await laptop.load_chat(chat)
        assert shown.messages[0].content == "Once upon a time"
        await laptop.flush_streams()
        await laptop.sync_now()
        await phone.sync_now()
        seen = await phone.load_chat(chat)
        assert seen.messages[0].content == "Once upon a time"
        with pytest.raises(VaultError.NotFound):
            await laptop.append_to_message(chat, "00000000-0000-7000-8000-000000000000", "x")
        assert await laptop.format_floor() == 1
        assert await laptop.upgrade_format()
        assert await laptop.format_floor() == 2
        await laptop.close()
        await phone.close()

    run(main())
