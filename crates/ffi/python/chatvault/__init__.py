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
