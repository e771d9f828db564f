"""`edalle bot` as a self-hoster first runs it: on a bot-only install, on first start without the model files,
and with slash commands only. Each runs the real entry point in a subprocess against the fake Discord.

A bot-only install (`pip install .`, no `[worker]`) is checked without building one (minutes, and gigabytes
of downloads): the subprocess refuses every import from an installed distribution that the bot's declared
dependencies (`[project].dependencies` and what they require) do not bring, exactly as the interpreter of
such an install would fail to find it, and reports what it loaded. The bot must start, answer, check a
member's picture and refuse a blocked word with what it declares.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import tomllib
from discord_fake import ThreadedFakeDiscord
from fake_hub import FakeHub, mini_preset_files, serve
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from PIL import Image
from test_weights_download import _env as hub_env

from edalle import __version__
from edalle.presets import get_preset, models_dir
from edalle.weights import MANIFEST

REPO = Path(__file__).resolve().parents[1]
MODEL_LIBRARIES = ('torch', 'jax', 'jaxlib', 'flax', 'numpy', 'open_clip', 'huggingface_hub', 'tokenizers', 'spandrel')

ONLY_DECLARED = r"""
import atexit, json, re, sys
from importlib.metadata import packages_distributions

allowed = set(json.loads(sys.argv[1]))
report = sys.argv[2]
owners = packages_distributions()
before = set(sys.modules)
refused = []


def normalized(name):
    return re.sub(r'[-_.]+', '-', name).lower()


class OnlyDeclared:
    # Modules of installed distributions the bot does not declare are missing, as in a bot-only install.
    def find_spec(self, name, path=None, target=None):
        top = name.partition('.')[0]
        dists = owners.get(top)
        if dists and not any(normalized(d) in allowed for d in dists):
            refused.append(top)
            raise ModuleNotFoundError(f'No module named {top!r} (not a bot dependency)', name=name)
        return None


sys.meta_path.insert(0, OnlyDeclared())


@atexit.register
def write_report():
    loaded = sorted({m.partition('.')[0] for m in sys.modules if m not in before})
    with open(report, 'w') as f:
        json.dump({'loaded': loaded, 'refused': sorted(set(refused))}, f)


from edalle.cli import main

sys.exit(main(sys.argv[3:]))
"""


def bot_distributions() -> set[str]:
    """The distributions a bot-only install has: the declared dependencies and what they require, no extras."""
    project = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']
    todo = [Requirement(line) for line in project['dependencies']]
    found = {'edalle'}
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in found or (requirement.marker is not None and not requirement.marker.evaluate({'extra': ''})):
            continue
        found.add(name)
        todo += [Requirement(line) for line in metadata.requires(requirement.name) or []]
    return found


def bot_env(server: ThreadedFakeDiscord, data_dir: Path, **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(('DISCORD_', 'EDALLE_', 'HF_'))}
    keep['PYTHONPATH'] = os.pathsep.join([str(REPO), str(REPO / 'tests'), os.environ.get('PYTHONPATH', '')])
    return {
        **keep,
        **server.env,
        'EDALLE_DATA_DIR': str(data_dir),
        'EDALLE_GUILD_READY_TIMEOUT': '0.05',
        'EDALLE_SYNC_COMMANDS': 'always',
        **extra,
    }


def wait_for_log(process: subprocess.Popen[bytes], log: Path, pattern: str, timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if match := re.search(pattern, log.read_text(errors='replace')):
            return match
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f'no {pattern!r} in the log ({process.poll()=}):\n{log.read_text(errors="replace")[-4000:]}')


def stop(process: subprocess.Popen[bytes], log: Path) -> str:
    process.send_signal(signal.SIGTERM)
    code = process.wait(60)
    text = log.read_text(errors='replace')
    assert code == 0 and 'Traceback' not in text, text[-4000:]
    return text


@pytest.fixture
def bot_process() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new('RGB', (width, height), (200, 40, 40)).save(buffer, format='PNG')
    return buffer.getvalue()


def test_the_bot_declares_what_it_imports_and_nothing_of_the_models() -> None:
    declared = bot_distributions()
    assert {'discord-py', 'aiosqlite', 'pillow', 'python-dotenv', 'yarl'} <= declared
    assert not {'torch', 'jax', 'jaxlib', 'flax', 'numpy', 'open-clip-torch', 'huggingface-hub'} & declared
    worker = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']['optional-dependencies']['worker']
    assert {canonicalize_name(Requirement(line).name) for line in worker} >= {'torch', 'jax', 'flax', 'numpy', 'pyyaml'}


def test_a_bot_only_install_starts_answers_and_checks_pictures(
    fake_discord_server: ThreadedFakeDiscord, tmp_path: Path, bot_process: list[subprocess.Popen[bytes]]
) -> None:
    server, fake = fake_discord_server, fake_discord_server.fake
    log, report = tmp_path / 'bot.log', tmp_path / 'imports.json'
    argv = [sys.executable, '-c', ONLY_DECLARED, json.dumps(sorted(bot_distributions())), str(report), 'bot', '--no-worker']
    (tmp_path / '.env').write_text('EDALLE_PREFIX=!\n')  # read with python-dotenv, a bot dependency
    env = bot_env(server, tmp_path / 'data')
    bot = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=log.open('wb'), stderr=subprocess.STDOUT)
    bot_process.append(bot)
    wait_for_log(bot, log, r'connected as', 60)
    text = log.read_text()
    assert f'edalle {__version__} bot' in text and 'none here: workers run elsewhere' in text
    assert 'voice will NOT be supported' not in text

    server.send_user_message(fake.channel, fake.alice, '!imagine a lighthouse in a storm')
    queued = server.call(fake.wait_for_message(fake.channel, timeout=20), timeout=30)
    assert re.search(r'job #\d+', queued.content), queued.content

    server.send_user_message(fake.channel, fake.moderator, '!admin block blood')
    server.call(fake.wait_for_message(fake.channel, timeout=20), timeout=30)
    server.send_user_message(fake.channel, fake.alice, '!imagine 🩸 moon')  # the model reads "drop of blood"
    refused = server.call(fake.wait_for_message(fake.channel, timeout=20), timeout=30)
    assert 'blocked word' in refused.content, refused.content

    server.call(fake.invoke_slash('expand', {'image': ('photo.png', png(300, 200)), 'ratio': '16:9'}, fake.bob))
    answer = server.call(fake.wait_for_message(None, ephemeral=True, edited=True, timeout=20), timeout=30)
    assert 'Expanding `photo.png` to 16:9' in answer.content, answer.content

    stop(bot, log)
    imports = json.loads(report.read_text())
    assert imports['refused'] == []
    assert not set(MODEL_LIBRARIES) & set(imports['loaded']), imports['loaded']
    assert {'discord', 'PIL', 'aiosqlite', 'dotenv'} <= set(imports['loaded'])


def test_slash_commands_only_need_no_message_content_intent(
    fake_discord_server: ThreadedFakeDiscord, tmp_path: Path, bot_process: list[subprocess.Popen[bytes]]
) -> None:
    server, fake = fake_discord_server, fake_discord_server.fake
    server.fake.set_privileged_intents(message_content=False)  # off in the Developer Portal
    log = tmp_path / 'bot.log'
    env = bot_env(server, tmp_path / 'data', EDALLE_TEXT_COMMANDS='0', EDALLE_WORKER='0')
    bot = subprocess.Popen(
        [sys.executable, '-m', 'edalle.cli', 'bot'], cwd=tmp_path, env=env, stdout=log.open('wb'), stderr=subprocess.STDOUT
    )
    bot_process.append(bot)
    wait_for_log(bot, log, r'connected as', 60)
    assert 'commands      slash only' in log.read_text()
    server.call(fake.invoke_slash('imagine', {'prompt': 'a lighthouse in a storm'}, fake.alice))
    queued = server.call(fake.wait_for_message(fake.channel, timeout=20), timeout=30)
    assert re.search(r'job #\d+', queued.content), queued.content
    stop(bot, log)


def test_the_first_start_fetches_the_preset_then_runs(
    fake_discord_server: ThreadedFakeDiscord, tmp_path: Path, bot_process: list[subprocess.Popen[bytes]]
) -> None:
    """README's run command on a fresh data dir: `edalle bot` fetches the mini preset (from a fake hub here),
    then starts the bot and its worker. The worker serves the tests' probe jobs: the fake hub's files have the
    right names and hashes but random contents, which no model could load."""
    hub = FakeHub()
    for (repo_id, filename), content in mini_preset_files(big=50_000).items():
        hub.add(repo_id, filename, content)
    data = tmp_path / 'data'
    with serve(hub):
        env = {
            **bot_env(fake_discord_server, data, EDALLE_PRESET='mini'),
            **{k: v for k, v in hub_env(tmp_path, hub.url).items() if k.startswith(('HF_', 'NO_PROXY'))},
            'EDALLE_WORKER_ARGS': '--kinds probe --runner-module worker_runners --poll 0.2',
        }
        log = tmp_path / 'bot.log'
        bot = subprocess.Popen(
            [sys.executable, '-m', 'edalle.cli', 'bot'],
            cwd=tmp_path,
            env=env,
            stdout=log.open('wb'),
            stderr=subprocess.STDOUT,
        )
        bot_process.append(bot)
        wait_for_log(bot, log, r'connected as', 90)
        wait_for_log(bot, log, rf'edalle {re.escape(__version__)} worker', 60)  # the local worker's own banner
    text = stop(bot, log)
    assert "The 'mini' model files are missing; fetching them now" in text
    root = models_dir(data)
    assert get_preset('mini').missing_files(root) == []
    recorded: dict[str, Any] = json.loads((root / 'dalle-mini' / MANIFEST).read_text())
    assert recorded['flax_model.msgpack']['source'].startswith('hub:dalle-mini/dalle-mini')
    assert text.index('fetching them now') < text.index('connected as')
