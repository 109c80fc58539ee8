"""A storage backend written in Python: every vault in memory.

``MemoryBackend`` is a factory (``name()``, ``open(vault)``) for the
conformance suite; ``MemoryBackend().open("v")`` is also a backend a vault
can run on (``chatvault.open_vault_with_backend``). Each ``open`` returns
a new client object sharing the vault's state, like a second device
connecting to the same server.
"""

from __future__ import annotations

import threading
import time
from typing import Dict, List, Optional, Tuple

import chatvault
from chatvault import (
    BlobListing,
    FeedChange,
    FeedPage,
    KeyFile,
    Precondition,
    StorageBackend,
    StorageCapabilities,
    StoredRecord,
    VaultError,
)

MAX_RECORD_BYTES = 1 << 20
NIL = "00000000-0000-0000-0000-000000000000"

bytes_copy = bytes


class VaultState:
    """What the "server" holds for one vault."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # chat -> (version, deleted, summary, body)
        self.records: Dict[str, Tuple[int, bool, bytes, Optional[bytes]]] = {}
        # commit log: (chat, version, deleted, summary)
        self.log: List[Tuple[str, int, bool, bytes]] = []
        self.keyring: Optional[Tuple[bytes, int]] = None
        # blob id -> (bytes, touched ms)
        self.blobs: Dict[str, Tuple[bytes, int]] = {}


def _conflict(chat: str, current: Optional[int]) -> VaultError:
    return VaultError.Conflict(
        message=f"stored version is {current}", chat=chat, current=current
    )


def _check(precondition: Precondition, chat: str, current: Optional[int]) -> None:
    if isinstance(precondition, Precondition.ABSENT):
        if current is not None:
            raise _conflict(chat, current)
    elif isinstance(precondition, Precondition.VERSION):
        if current != precondition.version:
            raise _conflict(chat, current)


class MemoryStorage(StorageBackend):
    """One client of a vault held in memory."""

    def __init__(self, state: VaultState) -> None:
        self.state = state

    def capabilities(self) -> StorageCapabilities:
        return StorageCapabilities(
            max_batch=100,
            max_record_bytes=MAX_RECORD_BYTES,
            atomic_preconditions=True,
            inline_summaries=True,
            concurrent_writers=False,
            blobs=True,
        )

    def changes(self, since: str, limit: int) -> FeedPage:
        with self.state.lock:
            start = int(since) if since else 0
            page = self.state.log[start : start + limit]
            end = start + len(page)
            return FeedPage(
                changes=[
                    FeedChange(chat=c, version=v, deleted=d, summary=s, writer=None)
                    for (c, v, d, s) in page
                ],
                cursor=str(end),
                has_more=end < len(self.state.log),
                waiting=None,
            )

    def get(self, chats: List[str], with_body: bool) -> List[StoredRecord]:
        with self.state.lock:
            out = []
            for chat in chats:
                found = self.state.records.get(chat)
                if found is None:
                    continue
                version, deleted, summary, body = found
                out.append(
                    StoredRecord(
                        chat=chat,
                        version=version,
                        deleted=deleted,
                        summary=summary,
                        body=body if with_body else None,
                    )
                )
            return out

    def put(self, record: StoredRecord, precondition: Precondition) -> None:
        size = len(record.summary) + len(record.body or b"")
        if size > MAX_RECORD_BYTES:
            raise VaultError.TooLarge(
                message="record too large", size=size, limit=MAX_RECORD_BYTES
            )
        with self.state.lock:
            found = self.state.records.get(record.chat)
            current = found[0] if found else None
            _check(precondition, record.chat, current)
            if current is not None and record.version <= current:
                raise _conflict(record.chat, current)
            body = None if record.deleted else record.body
            self.state.records[record.chat] = (
                record.version,
                record.deleted,
                bytes(record.summary),
                None if body is None else bytes(body),
            )
            self.state.log.append(
                (record.chat, record.version, record.deleted, bytes(record.summary))
            )

    def get_keyring(self) -> Optional[KeyFile]:
        with self.state.lock:
            if self.state.keyring is None:
                return None
            data, version = self.state.keyring
            return KeyFile(bytes=data, version=version)

    def put_keyring(self, bytes: bytes, precondition: Precondition) -> int:
        with self.state.lock:
            current = self.state.keyring[1] if self.state.keyring else None
            _check(precondition, NIL, current)
            version = (current or 0) + 1
            self.state.keyring = (bytes_copy(bytes), version)
            return version

    def put_blob(self, id: str, sealed: bytes) -> None:
        if len(sealed) > MAX_RECORD_BYTES:
            raise VaultError.TooLarge(
                message="blob too large", size=len(sealed), limit=MAX_RECORD_BYTES
            )
        with self.state.lock:
            kept = self.state.blobs.get(id, (bytes(sealed), 0))[0]
            self.state.blobs[id] = (kept, int(time.time() * 1000))

    def get_blob(self, id: str) -> Optional[bytes]:
        with self.state.lock:
            found = self.state.blobs.get(id)
            return found[0] if found else None

    def list_blobs(self, after: Optional[str], limit: int) -> BlobListing:
        with self.state.lock:
            ids = sorted(i for i in self.state.blobs if after is None or i > after)
            page = ids[: max(limit, 1)]
            return BlobListing(
                ids=page,
                touched_ms=[self.state.blobs[i][1] for i in page],
                has_more=len(ids) > len(page),
            )

    def delete_blob(self, id: str) -> None:
        with self.state.lock:
            self.state.blobs.pop(id, None)


class MemoryBackend:
    """Factory of in-memory vaults, by name."""

    storage_class = MemoryStorage

    def __init__(self) -> None:
        self.vaults: Dict[str, VaultState] = {}
        self.lock = threading.Lock()

    def name(self) -> str:
        return "python-memory"

    def open(self, vault: str) -> StorageBackend:
        with self.lock:
            state = self.vaults.setdefault(vault, VaultState())
        return self.storage_class(state)


class ForgetfulStorage(MemoryStorage):
    """Deliberately broken: versions are not checked (a stale put
    overwrites a newer record) and preconditions are ignored."""

    def put(self, record: StoredRecord, precondition: Precondition) -> None:
        with self.state.lock:
            self.state.records[record.chat] = (
                record.version,
                record.deleted,
                bytes(record.summary),
                None if record.deleted else record.body,
            )
            self.state.log.append(
                (record.chat, record.version, record.deleted, bytes(record.summary))
            )


class BrokenBackend(MemoryBackend):
    """A factory of ``ForgetfulStorage`` clients."""

    storage_class = ForgetfulStorage

    def name(self) -> str:
        return "python-forgetful"
