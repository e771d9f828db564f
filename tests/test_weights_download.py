"""`edalle models download` against a fake Hugging Face Hub (`tests/fake_hub.py`), through the real CLI.

Each test runs `python -m edalle.cli` in a subprocess whose `HF_ENDPOINT` points at the fake,
because `huggingface_hub` reads its endpoint and offline flag from the environment at import:
the installed client speaks its real protocol (HEAD for metadata, the LFS redirect, Range
requests, paths-info) to a server that can misbehave on cue.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import random
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_hub import FakeFile, FakeHub, mini_preset_files, serve

from edalle.presets import get_preset
from edalle.weights import MANIFEST, PARTIAL_SUFFIX, models_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
CHUNK = 10 * 1024 * 1024  # huggingface_hub writes what it receives in chunks of this size (DOWNLOAD_CHUNK_SIZE)
DALLE_WEIGHTS = ('dalle-mini/dalle-mini', 'flax_model.msgpack')
VQGAN_WEIGHTS = ('dalle-mini/vqgan_imagenet_f16_16384', 'flax_model.msgpack')
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    fake = FakeHub()
    for (repo_id, filename), content in mini_preset_files().items():
        fake.add(repo_id, filename, content)
    with serve(fake):
        yield fake


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / 'data'


def _env(tmp_path: Path, endpoint: str, **extra: str) -> dict[str, str]:
    """A clean hub environment: no token, no proxy, no user cache, no switches inherited from the machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(('HF_', 'HUGGING_FACE_')) and 'proxy' not in k.lower()}
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HUB_DISABLE_XET='1',
        HF_HOME=str(tmp_path / 'hf-home'),
        HF_HUB_DISABLE_TELEMETRY='1',
        NO_PROXY='127.0.0.1,localhost',
        COLUMNS='120',
        **extra,
    )
    return env


def _command(data_dir: Path, *args: str) -> list[str]:
    return [sys.executable, '-m', 'edalle.cli', '--data-dir', str(data_dir), 'models', *args]


def _run(data_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_command(data_dir, *args), env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=90)


def _run_on_a_terminal(data_dir: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal: tqdm (rightly) draws no bar into a pipe, so this is how a user sees it."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 24, 120, 0, 0))
    proc = subprocess.Popen(
        _command(data_dir, *args), env=env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave
    )
    os.close(slave)
    received: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                block = os.read(master, 65536)
            except OSError:  # EIO once the child has exited and closed its end
                return
            if not block:
                return
            received.append(block)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    stdout, _ = proc.communicate(timeout=90)
    reader.join(timeout=10)
    os.close(master)
    return proc.returncode, stdout.decode(), b''.join(received).decode(errors='replace')


def _local(data_dir: Path, repo_id: str, filename: str) -> Path:
    """Where a hub file of the mini preset belongs in the data directory."""
    for component in get_preset('mini').components:
        if any(f.repo_id == repo_id and f.filename == filename for f in component.files):
            return component.path(models_dir(data_dir)) / filename
    raise KeyError((repo_id, filename))


def _partials(data_dir: Path) -> list[Path]:
    return sorted(models_dir(data_dir).rglob(f'*{PARTIAL_SUFFIX}'))


def _assert_mini_complete(data_dir: Path, hub: FakeHub) -> None:
    for (repo_id, filename), fake in hub.files.items():
        local = _local(data_dir, repo_id, filename)
        assert local.read_bytes() == fake.content, local
        entry = json.loads((local.parent / MANIFEST).read_text())[filename]
        assert entry['sha256'] == hashlib.sha256(fake.content).hexdigest()
        if fake.lfs:
            assert entry['sha256'] == fake.sha256  # the hub's own LFS hash, as paths-info reports it
        assert entry['size'] == len(fake.content) and entry['source'].startswith(f'hub:{repo_id}@')
    assert not _partials(data_dir)


def _gets(hub: FakeHub) -> int:
    return sum(r.method == 'GET' for r in hub.requests)


def _error_line(stderr: str) -> str:
    """The CLI's error must be the last line, alone, and come without a traceback."""
    assert 'Traceback' not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith('error: '), stderr
    return last


def test_download_mini_fetches_every_file_with_a_progress_bar_then_verifies_and_a_rerun_fetches_nothing(
    hub: FakeHub, data_dir: Path, tmp_path: Path
) -> None:
    env = _env(tmp_path, hub.url)
    rc, stdout, stderr = _run_on_a_terminal(data_dir, env, 'download', '--preset', 'mini')
    assert rc == 0, stderr
    assert f'mini: {len(hub.files)} file(s) fetched' in stdout
    _assert_mini_complete(data_dir, hub)
    # tqdm's bar, as huggingface_hub draws it: "flax_model.msgpack: 100%|██████████| 301k/301k [...]"
    assert 'flax_model.msgpack: 100%|' in stderr and 'open_clip_model.safetensors: 100%|' in stderr, stderr
    # The weights came through the LFS redirect, the small files straight from /resolve.
    assert {r.path.split('/')[1] for r in hub.requests if r.method == 'GET'} == {'lfs', 'dalle-mini'}

    verified = _run(data_dir, env, 'verify', '--preset', 'mini', '--quick')
    assert verified.returncode == 0, verified.stdout + verified.stderr

    before = _gets(hub)
    again = _run(data_dir, env, 'download', '--preset', 'mini')
    assert again.returncode == 0, again.stderr
    assert 'mini: 0 file(s) fetched' in again.stdout
    assert again.stderr.count('already here') == len(hub.files)
    assert _gets(hub) == before


def _big_dalle_weights(hub: FakeHub) -> FakeFile:
    """DalleBart's weights, longer than one of huggingface_hub's 10 MiB write chunks, so a cut leaves bytes on disk."""
    return hub.add(*DALLE_WEIGHTS, random.Random(2).randbytes(CHUNK + 400_000))


def test_a_dropped_connection_resumes_with_a_range_request_in_the_same_run(
    hub: FakeHub, data_dir: Path, tmp_path: Path
) -> None:
    weights = _big_dalle_weights(hub)
    dropped = hub.drop_after(weights, CHUNK + 100_000)
    done = _run(data_dir, _env(tmp_path, hub.url), 'download', '--preset', 'mini')
    assert done.returncode == 0, done.stderr
    assert dropped.is_set()
    first, second = hub.gets(weights)
    assert first.range is None
    assert second.range == f'bytes={CHUNK}-'  # the first chunk was kept; only the rest was asked for again
    _assert_mini_complete(data_dir, hub)


def test_an_interrupted_download_resumes_where_it_stopped_on_the_next_run(
    hub: FakeHub, data_dir: Path, tmp_path: Path
) -> None:
    weights = _big_dalle_weights(hub)
    release = threading.Event()
    stalled = hub.stall_after(weights, CHUNK + 100_000, release)
    # The stall must outlast the test's wait, not the client's read timeout (10 s): on a busy machine the client
    # would otherwise give up, resume on its own and finish before the Ctrl-C this test is about.
    env = _env(tmp_path, hub.url, HF_HUB_DOWNLOAD_TIMEOUT='60')
    proc = subprocess.Popen(
        _command(data_dir, 'download', '--preset', 'mini'),
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert stalled.wait(timeout=60), 'the download never reached the weights'
        deadline = time.monotonic() + 30
        while not (_partials(data_dir) and _partials(data_dir)[0].stat().st_size >= CHUNK):
            assert time.monotonic() < deadline, 'the first chunk never reached the disk'
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C does
        _, stderr = proc.communicate(timeout=30)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert 'Traceback' not in stderr and 'run the command again to resume' in stderr, stderr
    [partial] = _partials(data_dir)
    assert partial.stat().st_size == CHUNK
    assert not _local(data_dir, *DALLE_WEIGHTS).exists()

    done = _run(data_dir, env, 'download', '--preset', 'mini')
    assert done.returncode == 0, done.stderr
    assert f'resuming flax_model.msgpack at {CHUNK} bytes' in done.stderr
    assert hub.gets(weights)[-1].range == f'bytes={CHUNK}-'
    assert len(hub.gets(weights)) == 2
    _assert_mini_complete(data_dir, hub)


@pytest.mark.parametrize(
    ('repo_id', 'filename', 'kind'),
    [(*VQGAN_WEIGHTS, 'sha256'), ('dalle-mini/dalle-mini', 'config.json', 'git-sha1')],
    ids=['lfs-weights', 'git-config'],
)
def test_a_corrupted_transfer_is_removed_and_reported_in_one_line(
    hub: FakeHub, data_dir: Path, tmp_path: Path, repo_id: str, filename: str, kind: str
) -> None:
    fake = hub.files[repo_id, filename]
    fake.served = bytes(b ^ 0xFF for b in fake.content[:64]) + fake.content[64:]  # same size: only the hash can tell
    env = _env(tmp_path, hub.url)
    done = _run(data_dir, env, 'download', '--preset', 'mini')
    assert done.returncode == 2, done.stderr
    line = _error_line(done.stderr)
    assert f'{repo_id}/{filename} arrived corrupted ({kind} ' in line and 'run the command again' in line
    local = _local(data_dir, repo_id, filename)
    assert not local.exists() and not _partials(data_dir)
    manifest = local.parent / MANIFEST
    assert not manifest.exists() or filename not in json.loads(manifest.read_text())

    fake.served = None  # the hub recovers: running again, as the message says, finishes the job
    assert _run(data_dir, env, 'download', '--preset', 'mini').returncode == 0
    _assert_mini_complete(data_dir, hub)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.parametrize('offline', [False, True], ids=['closed-port', 'HF_HUB_OFFLINE'])
def test_an_unreachable_hub_is_one_line_naming_the_file(data_dir: Path, tmp_path: Path, offline: bool) -> None:
    endpoint = f'http://127.0.0.1:{_closed_port()}'
    env = _env(tmp_path, endpoint, **({'HF_HUB_OFFLINE': '1'} if offline else {}))
    done = _run(data_dir, env, 'download', '--preset', 'mini')
    assert done.returncode == 2, done.stderr
    line = _error_line(done.stderr)
    assert line.startswith('error: could not fetch dalle-mini/dalle-mini/config.json: '), line
    if offline:
        assert 'HF_HUB_OFFLINE' in line
    else:
        assert f'the Hugging Face Hub at {endpoint} is unreachable' in line
    assert not _partials(data_dir)
