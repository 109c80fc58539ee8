"""chatvault: end-to-end encrypted chat storage that syncs every device.

The Rust library's facade through UniFFI. I/O methods are ``async``
(await them in asyncio); ``Vault.sidebar()``, ``Vault.status()`` and
``Vault.subscribe()`` return at once. Errors are ``VaultError``
subclasses, one per kind (``VaultError.WrongKey``,
``VaultError.Conflict``, ...), whose ``str()`` is the library's one-line
message.
"""

from ._native.chatvault_ffi import *  # noqa: F401,F403
from ._native.chatvault_ffi import VaultError as _VaultError


def _message(self: BaseException) -> str:
    return getattr(self, "message", "") or BaseException.__str__(self)


# Every variant carries ``message``: the same line the Rust library prints.
_VaultError.__str__ = _message  # type: ignore[method-assign]

from . import conformance  # noqa: E402,F401


async def events(vault: "Vault", maxsize: int = 0):  # noqa: F405
    """The vault's changes as an async iterator, for asyncio code::

        async for event in chatvault.events(vault):
            if isinstance(event, chatvault.VaultEvent.CHAT_UPSERTED): ...

    Delivered from the library's thread into the running loop; stops
    (cancelling the subscription) when the iteration is abandoned.
    """
    import asyncio

    loop = asyncio.get_running_loop()
    queue: "asyncio.Queue" = asyncio.Queue(maxsize)

    class _Forward(ChangeListener):  # noqa: F405
        def on_event(self, event):
            loop.call_soon_threadsafe(queue.put_nowait, event)

    subscription = vault.subscribe(_Forward())
    try:
        while True:
            yield await queue.get()
    finally:
        subscription.cancel()
