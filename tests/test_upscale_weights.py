"""The upscaler's files: the `upscale` add-on (download, import, verify against the pinned hash), where each preset finds it.

Real-ESRGAN's published file cannot be part of the tests (67 MB, and no network), so a file in
its layout stands in (the tiny RRDBNet), and `pinned` makes the add-on's pinned SHA-256 that
file's for the tests that need it to pass; the tests that need it to fail keep the real pin.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_hub import FakeHub, serve
from test_weights_download import _env, _error_line

from edalle import presets
from edalle.presets import ADD_ONS, MODEL_SETS, REALESRGAN_SHA256, UPSCALE_FILES, UnknownPreset, get_model_set, get_preset
from edalle.upscale import upscale_installed, upscaler_file, upscaler_path
from edalle.weights import MANIFEST, MissingWeights, import_dir, models_dir, require, verify

REPO_ROOT = Path(__file__).resolve().parents[1]
HUB_FILE = UPSCALE_FILES.files[0]
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope='module')
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a file in RealESRGAN_x4plus.pth's layout: the tiny RRDBNet, saved under the published name."""
    from edalle.models.upscaler import TINY_RRDBNET, write_rrdbnet_weights

    path = tmp_path_factory.mktemp('stand-in') / 'RealESRGAN_x4plus.pth'
    write_rrdbnet_weights(path, TINY_RRDBNET, seed=7)
    return path.read_bytes()


def pinned_to(sha256: str) -> presets.AddOn:
    """The `upscale` add-on with another pinned hash."""
    component = dataclasses.replace(UPSCALE_FILES, files=(dataclasses.replace(HUB_FILE, sha256=sha256),))
    return dataclasses.replace(ADD_ONS['upscale'], components=(component,))


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch, stand_in: bytes) -> Iterator[None]:
    monkeypatch.setitem(MODEL_SETS, 'upscale', pinned_to(hashlib.sha256(stand_in).hexdigest()))
    yield


def test_the_upscale_add_on_is_real_esrgan_x4plus_pinned_by_hash() -> None:
    assert get_model_set('upscale') is ADD_ONS['upscale'] and [c.kind for c in ADD_ONS['upscale'].components] == ['upscale']
    assert HUB_FILE.local_name == 'RealESRGAN_x4plus.pth' and HUB_FILE.revision and len(HUB_FILE.revision) == 40
    assert HUB_FILE.sha256 == REALESRGAN_SHA256 == '4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1'
    with pytest.raises(UnknownPreset, match='mini, mega, tiny, upscale'):
        get_model_set('huge')
    with pytest.raises(UnknownPreset, match='choose one of: mini, mega, tiny.'):
        get_preset('upscale')  # not something to imagine with


def test_each_preset_finds_its_upscaler(tmp_path: Path) -> None:
    real = models_dir(tmp_path) / 'realesrgan-x4plus' / 'RealESRGAN_x4plus.pth'
    assert upscaler_file(tmp_path, 'mini') == upscaler_file(tmp_path, 'mega') == real
    assert upscaler_path(tmp_path, 'mini') is None and not upscale_installed(tmp_path, 'mini')
    real.parent.mkdir(parents=True)
    real.write_bytes(b'weights')  # presence is what the bot checks; `verify` checks the hash
    assert upscaler_path(tmp_path, 'mega') == real and upscale_installed(tmp_path, 'mega')

    tiny = models_dir(tmp_path) / 'tiny' / 'upscale' / 'rrdbnet_x4.pth'
    assert upscaler_file(tmp_path, 'tiny') == tiny
    assert upscaler_path(tmp_path, 'tiny') is None and upscale_installed(tmp_path, 'tiny')  # made on first use
    tiny.parent.mkdir(parents=True)
    tiny.write_bytes(b'weights')  # as `ensure_tiny` leaves it (tests/test_weights.py makes the real one)
    assert upscaler_path(tmp_path, 'tiny') == tiny


def test_missing_upscale_weights_name_the_file_and_the_commands(tmp_path: Path) -> None:
    with pytest.raises(MissingWeights) as caught:
        require(ADD_ONS['upscale'], tmp_path)
    message = str(caught.value)
    assert "The 'upscale' model files are missing" in message and 'realesrgan-x4plus/RealESRGAN_x4plus.pth' in message
    assert 'edalle models download --preset upscale' in message and 'edalle models import DIR --preset upscale' in message


def test_import_takes_the_published_file_and_refuses_another(tmp_path: Path, stand_in: bytes, monkeypatch) -> None:
    usb = tmp_path / 'usb' / 'esrgan'
    usb.mkdir(parents=True)
    (usb / 'RealESRGAN_x4plus.pth').write_bytes(stand_in)
    report = import_dir(tmp_path / 'usb', 'upscale', tmp_path / 'data')  # the real pin: the stand-in is not the file
    assert report.copied == [] and [p.name for p in report.missing] == ['RealESRGAN_x4plus.pth']
    assert len(report.rejected) == 1 and 'is not the published file’s 4fa0d38905f7…' in report.rejected[0]

    monkeypatch.setitem(MODEL_SETS, 'upscale', pinned_to(hashlib.sha256(stand_in).hexdigest()))
    report = import_dir(tmp_path / 'usb', 'upscale', tmp_path / 'data')
    target = upscaler_file(tmp_path / 'data', 'mini')
    assert report.copied == [target] and report.missing == [] and report.rejected == []
    assert target.read_bytes() == stand_in
    assert json.loads((target.parent / MANIFEST).read_text())['RealESRGAN_x4plus.pth']['source'].startswith('import:')


@pytest.mark.usefixtures('pinned')
def test_verify_checks_the_pinned_hash_and_loads_the_network(tmp_path: Path, stand_in: bytes, monkeypatch) -> None:
    target = upscaler_file(tmp_path, 'mini')
    target.parent.mkdir(parents=True)
    target.write_bytes(stand_in)
    checks = verify('upscale', tmp_path)
    assert [(c.ok, c.detail) for c in checks] == [
        (True, f'sha256 {hashlib.sha256(stand_in).hexdigest()[:12]}… matches the published file'),
        (True, 'spandrel loads it as a ×4 ESRGAN network'),
    ]
    monkeypatch.setitem(MODEL_SETS, 'upscale', ADD_ONS['upscale'])  # the real pin
    [check] = verify('upscale', tmp_path)  # a failed hash check skips the load
    assert not check.ok and check.detail.endswith('is not the published file')


# --------------------------------------------------------------------------- download, through the real CLI


PINNED_CLI = """
import dataclasses, sys
from edalle import presets
from edalle.cli import main
addon = presets.MODEL_SETS['upscale']
component = addon.components[0]
hub_file = dataclasses.replace(component.files[0], sha256=sys.argv[1])
presets.MODEL_SETS['upscale'] = dataclasses.replace(addon, components=(dataclasses.replace(component, files=(hub_file,)),))
sys.exit(main(sys.argv[2:]))
"""


def _download(tmp_path: Path, hub: FakeHub, pin: str) -> subprocess.CompletedProcess[str]:
    """`edalle models download --preset upscale` in a subprocess against the fake hub, with the add-on pinned to `pin`."""
    args = ['--data-dir', str(tmp_path / 'data'), 'models', 'download', '--preset', 'upscale']
    return subprocess.run(
        [sys.executable, '-c', PINNED_CLI, pin, *args],
        env=_env(tmp_path, hub.url),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def hub(stand_in: bytes) -> Iterator[FakeHub]:
    fake = FakeHub()
    fake.add(HUB_FILE.repo_id, HUB_FILE.filename, stand_in, lfs=True)
    with serve(fake):
        yield fake


def test_download_fetches_the_file_from_its_folder_in_the_mirror(hub: FakeHub, tmp_path: Path, stand_in: bytes) -> None:
    done = _download(tmp_path, hub, hashlib.sha256(stand_in).hexdigest())
    assert done.returncode == 0, done.stderr
    assert 'upscale: 1 file(s) fetched' in done.stdout
    target = upscaler_file(tmp_path / 'data', 'mini')
    assert target.read_bytes() == stand_in
    entry = json.loads((target.parent / MANIFEST).read_text())['RealESRGAN_x4plus.pth']
    assert entry['source'] == f'hub:{HUB_FILE.repo_id}@{HUB_FILE.revision}'
    asked = [r.path for r in hub.requests if r.method == 'HEAD']
    assert asked == [f'/{HUB_FILE.repo_id}/resolve/{HUB_FILE.revision}/RealESRGAN/RealESRGAN_x4plus.pth']


def test_a_mirror_file_that_is_not_the_published_one_is_refused(hub: FakeHub, tmp_path: Path) -> None:
    done = _download(tmp_path, hub, REALESRGAN_SHA256)  # the real pin; the hub's own hashes all agree with its bytes
    assert done.returncode == 2, done.stderr
    line = _error_line(done.stderr)
    assert f'{HUB_FILE.repo_id}/{HUB_FILE.filename} is not the published file' in line
    assert 'instead of 4fa0d38905f7…' in line and 'edalle models import' in line
    directory = upscaler_file(tmp_path / 'data', 'mini').parent
    assert list(directory.iterdir()) == []  # no file, no partial file, no manifest entry
