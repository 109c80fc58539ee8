"""Run chatvault's Storage conformance suite against a Python backend.

A backend is a class implementing ``chatvault.StorageBackend``'s methods
(``capabilities``, ``changes``, ``get``, ``put``, ``get_keyring``,
``put_keyring``, ``put_blob``, ``get_blob``, ``list_blobs``,
``delete_blob``). ``run`` needs a *factory*: an object with ``name()`` and
``open(vault)``, returning a new independent client of the vault named
``vault`` (a fresh, empty vault on first use).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from ._native.chatvault_ffi import (
    BackendFactory,
    ContractOutcome,
    conformance_contracts,
    run_conformance,
)

__all__ = ["Result", "Report", "run", "contracts"]


@dataclass(frozen=True)
class Result:
    """One contract and how it went."""

    name: str
    status: str  # "passed", "skipped" or "failed"
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class Report:
    """Every contract's result, in the order they ran."""

    backend: str
    results: List[Result]

    @property
    def passed(self) -> List[Result]:
        return [r for r in self.results if r.status == "passed"]

    @property
    def skipped(self) -> List[Result]:
        return [r for r in self.results if r.status == "skipped"]

    @property
    def failed(self) -> List[Result]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def __str__(self) -> str:
        lines = [
            f"chatvault conformance, backend {self.backend}: "
            f"{len(self.passed)} passed, {len(self.failed)} failed, "
            f"{len(self.skipped)} skipped"
        ]
        for r in self.results:
            if r.status != "passed":
                lines.append(f"  {r.status.upper():7} {r.name}: {r.detail}")
        return "\n".join(lines)


def contracts() -> List[str]:
    """The names of the Storage contracts, in the order they run."""
    return conformance_contracts()


def run(factory: BackendFactory, filter: Optional[str] = None, timeout_secs: int = 120) -> Report:
    """Runs the Storage contracts (those whose name contains ``filter``)
    against the backend ``factory`` opens; blocks until done."""
    results = []
    for r in run_conformance(factory, filter, timeout_secs):
        outcome = r.outcome
        if isinstance(outcome, ContractOutcome.PASSED):
            results.append(Result(r.name, "passed"))
        elif isinstance(outcome, ContractOutcome.SKIPPED):
            results.append(Result(r.name, "skipped", outcome.reason))
        else:
            results.append(Result(r.name, "failed", outcome.message))
    return Report(factory.name(), results)
