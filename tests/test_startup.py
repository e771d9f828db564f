"""What every command does first (`edalle.startup`, `edalle.cli`): one `.env` for all commands, one log format,
the worker's banner, the two warnings, first-start refusals that say what to do, and the CLI's conveniences.

The `.env` tests run the real CLI in a subprocess in a directory of their own, because loading `.env` writes
`os.environ`, as it must for the engine and the child processes to see the same values.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_hub import FakeHub, mini_preset_files, serve
from PIL import Image
from test_weights_download import _env as hub_env

from edalle import __version__
from edalle.cli import build_parser, main
from edalle.outputs import write_atomic
from edalle.startup import framework_devices, gpu_warning, result_store_warning

REPO = Path(__file__).resolve().parents[1]
TIMESTAMPED = re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) +[\w.]+: ', re.MULTILINE)


def clean_env(base: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    """`base` (this process's environment) without any edalle or Discord setting, with the project importable;
    hub settings are dropped too unless `base` is a fake hub's environment."""
    drop = ('EDALLE_', 'DISCORD_') if base is not None else ('EDALLE_', 'DISCORD_', 'HF_')
    env = {k: v for k, v in (base if base is not None else os.environ).items() if not k.startswith(drop)}
    env['PYTHONPATH'] = os.pathsep.join([str(REPO), str(REPO / 'tests'), os.environ.get('PYTHONPATH', '')])
    return {**env, **extra}


def edalle(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, '-m', 'edalle.cli', *args],
        cwd=cwd,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    fake = FakeHub()
    for (repo_id, filename), content in mini_preset_files(big=20_000).items():
        fake.add(repo_id, filename, content)
    with serve(fake):
        yield fake


# -- one .env for every command ---------------------------------------------------------------------------


def test_models_download_reads_dotenv_so_its_files_land_where_every_other_command_looks(
    hub: FakeHub, tmp_path: Path
) -> None:
    """The bug this guards against: EDALLE_DATA_DIR in `.env`, read only by `edalle bot`, so
    `edalle models download` filled ./data and the bot then said the files were missing."""
    (tmp_path / '.env').write_text('EDALLE_DATA_DIR=./elsewhere\nEDALLE_PRESET=mini\n')
    env = clean_env(hub_env(tmp_path, hub.url))

    done = edalle(tmp_path, 'models', 'download', env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / 'elsewhere' / 'models' / 'dalle-mini' / 'flax_model.msgpack').is_file()
    assert not (tmp_path / 'data').exists()

    verified = edalle(tmp_path, 'models', 'verify', '--quick', env=env)
    assert verified.returncode == 0, verified.stdout
    assert str(Path('elsewhere') / 'models') in verified.stdout and 'FAIL' not in verified.stdout

    status = edalle(tmp_path, 'status', env=env)  # reads the same data dir: no database there yet
    assert status.returncode == 1 and f'no database file yet at {Path("elsewhere") / "edalle.db"}' in status.stdout


def test_the_shell_wins_over_dotenv_and_env_file_may_follow_the_subcommand(tmp_path: Path) -> None:
    (tmp_path / '.env').write_text('EDALLE_DATA_DIR=./from-dotenv\n')
    (tmp_path / 'other.env').write_text('EDALLE_DATA_DIR=./from-other\n')
    assert 'from-dotenv' in edalle(tmp_path, 'status').stdout
    assert 'from-shell' in edalle(tmp_path, 'status', env=clean_env(EDALLE_DATA_DIR='from-shell')).stdout
    assert 'from-other' in edalle(tmp_path, 'status', '--env-file', 'other.env').stdout
    assert 'from-other' in edalle(tmp_path, '--env-file', 'other.env', 'status').stdout


def test_imagine_expand_and_models_take_edalle_preset_from_dotenv(tmp_path: Path) -> None:
    """An unknown preset in `.env` is refused by every command that loads models: they all read it."""
    (tmp_path / '.env').write_text('EDALLE_PRESET=huge\n')
    Image.new('RGB', (256, 256)).save(tmp_path / 'in.png')
    for args in (['imagine', 'a red fox'], ['expand', 'in.png'], ['models', 'download'], ['worker']):
        done = edalle(tmp_path, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert "Unknown preset 'huge'" in done.stderr and 'Traceback' not in done.stderr, (args, done.stderr)


# -- logging and the worker's banner ----------------------------------------------------------------------


def test_the_worker_logs_a_banner_with_timestamps_and_honours_edalle_log_level(tmp_path: Path) -> None:
    args = ('worker', '--kinds', 'probe', '--runner-module', 'worker_runners', '--exit-when-idle', '--data-dir', 'd')
    done = edalle(tmp_path, *args, '--preset', 'tiny')
    assert done.returncode == 0, done.stderr
    assert TIMESTAMPED.search(done.stderr), done.stderr
    assert not [line for line in done.stderr.splitlines() if line.strip() and not TIMESTAMPED.match(line)]
    assert f'edalle {__version__} worker' in done.stderr
    for field in (f'data dir      {tmp_path / "d"}', f'database      {Path("d") / "edalle.db"}', 'preset        tiny'):
        assert field in done.stderr, done.stderr
    assert 'result store  local' in done.stderr

    quiet = edalle(tmp_path, *args, env=clean_env(EDALLE_LOG_LEVEL='warning'))
    assert quiet.returncode == 0 and quiet.stderr == '', quiet.stderr
    wrong = edalle(tmp_path, *args, env=clean_env(EDALLE_LOG_LEVEL='loud'))
    assert wrong.returncode == 2 and 'EDALLE_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR' in wrong.stderr


def test_warnings_for_set_ups_that_run_but_run_wrong() -> None:
    assert result_store_warning('postgresql://u:p@db/edalle', 'local') is not None
    assert result_store_warning('postgresql://u:p@db/edalle', None) is not None  # local is the default
    assert result_store_warning('postgresql://u:p@db/edalle', 'database') is None
    assert result_store_warning(None, 'local') is None  # SQLite: one host, one data dir
    warning = gpu_warning(True, 'cpu')
    assert warning is not None and "pip install -e '.[worker,cuda]'" in warning
    assert gpu_warning(True, 'gpu') is None and gpu_warning(False, 'cpu') is None


def test_the_devices_line_names_what_jax_and_torch_compute_on() -> None:
    import jax
    import torch

    found = framework_devices()
    expected_torch = 'cuda' if torch.cuda.is_available() else 'cpu'
    assert found['torch'].startswith(f'{expected_torch} (') and found['JAX'].startswith(f'{jax.default_backend()} (')
    assert framework_devices('cpu')['torch'] == 'cpu (CPU)'


# -- first start without the files ------------------------------------------------------------------------


def test_a_worker_without_the_files_refuses_when_told_to_and_explains_when_offline(tmp_path: Path) -> None:
    for refuse in (('--no-download',), ()):
        env = clean_env() if refuse else clean_env(EDALLE_DOWNLOAD='0')
        done = edalle(tmp_path, 'worker', '--preset', 'mini', '--data-dir', 'd', *refuse, env=env)
        assert done.returncode == 2 and 'Traceback' not in done.stderr, done.stderr
        assert "The 'mini' model files are missing" in done.stderr and 'Fetching them failed' not in done.stderr
        assert 'edalle models download --preset mini' in done.stderr and 'edalle models import' in done.stderr

    offline = edalle(tmp_path, 'worker', '--preset', 'mini', '--data-dir', 'd', env=clean_env(HF_HUB_OFFLINE='1'))
    assert offline.returncode == 2 and 'Traceback' not in offline.stderr, offline.stderr
    assert 'fetching them now' in offline.stderr
    assert 'Fetching them failed: could not fetch' in offline.stderr and 'offline mode is on' in offline.stderr
    assert 'edalle models import DIR --preset mini' in offline.stderr
    assert not list((tmp_path / 'd').rglob('flax_model.msgpack'))


# -- the CLI ----------------------------------------------------------------------------------------------


def test_version_and_global_options_before_or_after_the_subcommand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env from wherever the tests run
    assert main(['--version']) == 0
    assert capsys.readouterr().out.strip() == f'edalle {__version__}'
    assert main(['status', '--data-dir', 'after']) == 1
    assert str(Path('after') / 'edalle.db') in capsys.readouterr().out
    assert main(['--data-dir', 'before', 'status']) == 1
    assert str(Path('before') / 'edalle.db') in capsys.readouterr().out
    assert main(['--data-dir', 'before', 'status', '--data-dir', 'after']) == 1  # the later one wins
    assert str(Path('after') / 'edalle.db') in capsys.readouterr().out
    assert build_parser().parse_args(['models', 'list', '--debug']).debug  # after the subcommand too


def _parsers(parser: argparse.ArgumentParser, path: str = 'edalle') -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f'{path} {name} has no help line'
                yield from _parsers(sub, f'{path} {name}')


def test_every_command_and_argument_has_help() -> None:
    missing = [
        f'{path} {action.option_strings or action.dest}'
        for path, parser in _parsers(build_parser())
        for action in parser._actions
        if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) and not action.help
    ]
    assert missing == []


def test_preset_options_offer_the_presets() -> None:
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if '--preset' in action.option_strings:
                assert action.choices, path
                assert set(action.choices) >= {'mini', 'mega', 'tiny'}, path


def test_status_reports_the_queue_and_the_workers_and_fails_without_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import socket

    from edalle.jobs import SqliteJobStore
    from edalle.operations import imagine

    async def fill() -> None:
        store = await SqliteJobStore.open(tmp_path / 'edalle.db')
        try:
            for user in (1, 2):  # two members: one member's second job would wait out the cooldown
                request = imagine.request(
                    user_id=user, guild_id=2, channel_id=3, prompt='x', n=1, preset='tiny', request_key=str(user)
                )
                await store.enqueue(request)
            await store.register_worker('gpu-7:12:abc', {'host': 'gpu-7', 'preset': 'mini', 'kinds': ['imagine', 'expand']})
        finally:
            await store.close()

    asyncio.run(fill())
    monkeypatch.chdir(tmp_path)
    assert main(['status', '--data-dir', '.']) == 0
    out = capsys.readouterr().out
    assert 'reachable' in out and '0 running, 2 queued' in out and '1 online' in out
    assert 'gpu-7:12:abc: preset mini, imagine, expand; seen 0 s ago' in out
    assert main(['status', '--data-dir', '.', '--require-worker']) == 0
    assert main(['status', '--data-dir', '.', '--require-worker', 'this-host']) == 1  # gpu-7 is another host
    assert f'no worker on this host ({socket.gethostname()})' in capsys.readouterr().out


# -- files ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(('umask', 'mode'), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_output_files_follow_the_users_umask(tmp_path: Path, umask: int, mode: int) -> None:
    previous = os.umask(umask)
    try:
        write_atomic(tmp_path / 'out' / 'grid.png', b'picture')
    finally:
        os.umask(previous)
    assert (tmp_path / 'out' / 'grid.png').stat().st_mode & 0o777 == mode
    assert [p.name for p in (tmp_path / 'out').iterdir()] == ['grid.png']  # no temporary file left
