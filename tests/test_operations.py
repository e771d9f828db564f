"""The registry: every operation is complete (request and its checks, runner, bucket, compute class, Discord module
with its renderer, a test module of its own), and the store, the worker and the bot know operations only through it."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

from bot.bot import INITIAL_EXTENSIONS
from bot.operations import OperationCog
from edalle import operations
from edalle.jobs import Limits
from edalle.operations.base import BUCKETS, Operation

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


@pytest.mark.parametrize('operation', operations.OPERATIONS, ids=operations.names())
def test_every_operation_has_its_request_checks_runner_bucket_renderer_and_tests(operation: Operation) -> None:
    module = inspect.getmodule(type(operation))
    assert module is not None and module.OPERATION is operation
    assert operation.bucket in BUCKETS and operation.compute in ('sampling', 'optimising', 'feed-forward')
    assert operation.title and operation.name.isidentifier()
    # its own checks (a bad request is refused at admission, before anything is charged) and its own runner
    assert type(operation).check is not Operation.check
    assert type(operation).run is not Operation.run
    # a request builder whose requests the store can batch and a worker of any preset can serve
    request = inspect.signature(module.request)
    assert {'user_id', 'guild_id', 'channel_id', 'preset', 'request_key'} <= set(request.parameters)
    # its Discord module is loaded by the bot and holds the cog that renders its jobs
    assert operation.discord in INITIAL_EXTENSIONS
    discord_module = importlib.import_module(operation.discord)
    cogs = [
        value
        for value in vars(discord_module).values()
        if inspect.isclass(value) and issubclass(value, OperationCog) and getattr(value, 'operation', None) is operation
    ]
    assert len(cogs) == 1, f'{operation.discord} must hold one OperationCog for {operation.name}'
    assert cogs[0].describe is not OperationCog.describe
    assert callable(getattr(discord_module, 'setup', None))
    # and a test module of its own
    assert (TESTS / f'test_op_{operation.name}.py').is_file()


def test_operations_have_distinct_names_and_every_bucket_is_a_limit() -> None:
    assert len(set(operations.names())) == len(operations.OPERATIONS)
    assert all(hasattr(Limits(), bucket) for bucket in BUCKETS)
    assert {operation.bucket for operation in operations.OPERATIONS} <= set(BUCKETS)


def test_generic_code_names_no_operation() -> None:
    """The store, the worker loop, delivery and the generic commands know operations only through the registry:
    no operation's name appears in them as a string."""
    generic = [
        'edalle/jobs/store.py',
        'edalle/jobs/sqlite.py',
        'edalle/jobs/postgres.py',
        'edalle/jobs/transactions.py',
        'edalle/worker/main.py',
        'edalle/worker/runners.py',
        'bot/delivery.py',
        'bot/operations.py',
        'bot/admission.py',
        'bot/cogs/jobs.py',
        'bot/cogs/admin.py',
        'bot/utils/render.py',
        'bot/utils/results.py',
        'bot/utils/views.py',
        'bot/utils/custom_ids.py',
    ]
    for path in generic:
        text = (REPO / path).read_text(encoding='utf-8')
        for name in operations.names():
            assert f"'{name}'" not in text and f'"{name}"' not in text, (path, name)
