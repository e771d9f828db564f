"""The seam between the queue and the operations: one runner per job kind this worker serves.

A runner turns claimed jobs into result summaries on the worker's job thread (the engine blocks). For
every operation of the registry (`edalle.operations`) the runner is that operation's `run`, called with
the engine this process loaded once (`load_engine`); the run contract (`WorkItem`, `RunContext`,
`Cancelled`, outcomes) is `edalle.operations.base`'s. Models load only when a runner for an operation is
built, so a worker serving other kinds (the tests' probe jobs) never loads jax or torch.

Adding kinds without an operation (the hook tests use): a module named with `--runner-module` (or in
`$EDALLE_RUNNER_MODULES`, comma-separated) is imported and its `RUNNERS: dict[str, RunnerFactory]` is
added to the table; then `--kinds` picks which kinds this worker serves.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edalle import operations
from edalle.operations.base import Operation, Outcome, RunContext, WorkItem

log = logging.getLogger(__name__)


class Runner(Protocol):
    kind: str
    batchable: bool  # several jobs with one compat key may run as one call
    compat_prefix: str  # the compat keys it serves, e.g. 'imagine:mini:'

    def run(self, items: Sequence[WorkItem], ctx: RunContext) -> list[Outcome]: ...


@dataclass(frozen=True)
class RunnerConfig:
    preset: str
    data_dir: Path
    device: str | None = None
    dtype: str | None = None


RunnerFactory = Callable[[RunnerConfig], Runner]


@functools.cache
def load_engine(preset: str, data_dir: Path, device: str | None, dtype: str | None) -> Any:
    """Load the models once per process, shared by every operation's runner."""
    from edalle.engine import Engine

    return Engine.load(preset, data_dir, device=device, dtype=dtype)


class OperationRunner:
    """An operation's `run` on the engine this worker loaded."""

    def __init__(self, operation: Operation, config: RunnerConfig) -> None:
        self.operation = operation
        self.kind = operation.name
        self.batchable = operation.batchable
        self.compat_prefix = operation.compat_prefix(config.preset)
        self.engine = load_engine(config.preset, config.data_dir, config.device, config.dtype)
        operation.warm_up(self.engine)

    def run(self, items: Sequence[WorkItem], ctx: RunContext) -> list[Outcome]:
        return self.operation.run(self.engine, items, ctx)


def operation_factory(operation: Operation) -> RunnerFactory:
    return functools.partial(OperationRunner, operation)


def load_runner_modules(names: Sequence[str]) -> dict[str, RunnerFactory]:
    """The runner table: every operation plus each named module's `RUNNERS`."""
    table = {operation.name: operation_factory(operation) for operation in operations.OPERATIONS}
    env_names = [n.strip() for n in os.environ.get('EDALLE_RUNNER_MODULES', '').split(',') if n.strip()]
    for name in [*env_names, *names]:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ValueError(f'cannot import the runner module {name!r}: {exc}') from exc
        table.update(module.RUNNERS)
    return table


def build_runners(kinds: Sequence[str], config: RunnerConfig, modules: Sequence[str] = ()) -> dict[str, Runner]:
    """Build the runners for `kinds` (this loads the models, once). An operation this worker cannot run (its
    weights are not installed) is left out with a warning that says how to add it."""
    table = load_runner_modules(modules)
    unknown = [kind for kind in kinds if kind not in table]
    if unknown:
        raise ValueError(f'unknown job kind(s) {", ".join(unknown)}; known: {", ".join(sorted(table))}')
    served = []
    for kind in kinds:
        operation = operations.get(kind)
        reason = operation.missing(config.preset, config.data_dir) if operation is not None else None
        if reason is not None:
            log.warning('not serving %s jobs: %s', kind, reason)
            continue
        served.append(kind)
    if not served:
        raise ValueError(f'this worker can serve none of {", ".join(kinds)}')
    return {kind: table[kind](config) for kind in served}
