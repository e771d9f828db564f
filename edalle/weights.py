"""Where model files live, and how they get there: download, import by hand, verify, generate.

Layout: `<data dir>/models/<component directory>/<files>` as `edalle.presets` names them,
plus one `edalle-manifest.json` per component directory recording each file's size and
SHA-256 as it arrived (from the hub's own LFS hash when downloaded), so `verify` can tell a
truncated or swapped file from a good one without the network. A file whose published hash
is pinned in `edalle.presets` (the Real-ESRGAN weights, fetched from a mirror) must also match
that hash to be downloaded, imported or verified.

Every function here takes a preset or an add-on name (`edalle.presets.MODEL_SETS`).

Nothing here runs at import time and nothing is fetched unless asked: offline and without
weights, loading fails with `MissingWeights`, whose message names the missing files and the
command that fetches or imports them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edalle.presets import Component, HubFile, ModelSet, Preset, get_model_set, get_preset, models_dir

MANIFEST = 'edalle-manifest.json'
TINY_SEED = 20220710  # E-DALL-E's release date: any fixed number makes the tiny preset reproducible


class MissingWeights(FileNotFoundError):
    """Model files are not in the data directory; `reason` says why fetching them on first start failed."""

    def __init__(self, preset: ModelSet, missing: list[Path], reason: str | None = None) -> None:
        self.preset = preset
        self.missing = missing
        listed = '\n'.join(f'  - {p}' for p in missing)
        failed = f'Fetching them failed: {reason}\n' if reason else ''
        super().__init__(
            f"The '{preset.name}' model files are missing:\n{listed}\n{failed}"
            f'Fetch them with `edalle models download --preset {preset.name}` (needs internet access to the '
            f'Hugging Face Hub), or bring them by hand and run `edalle models import DIR --preset {preset.name}`. '
            'Try `--preset tiny` to run without any downloads (it draws noise).'
        )


#: progress(stage, done, total): e.g. ('hash flax_model.msgpack', bytes read, file size), ('load', 2, 3)
Progress = Callable[[str, int, int], None]


def sha256_of(path: Path, chunk_size: int = 1 << 20, progress: Progress | None = None) -> str:
    digest = hashlib.sha256()
    size, done = path.stat().st_size, 0
    with path.open('rb') as f:
        while block := f.read(chunk_size):
            digest.update(block)
            done += len(block)
            if progress is not None:
                progress(f'hash {path.name}', done, size)
    return digest.hexdigest()


def read_manifest(directory: Path) -> dict[str, dict]:
    path = directory / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


def record_in_manifest(directory: Path, filename: str, sha256: str, source: str) -> None:
    manifest = read_manifest(directory)
    manifest[filename] = {'sha256': sha256, 'size': (directory / filename).stat().st_size, 'source': source}
    tmp = directory / (MANIFEST + '.tmp')
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    tmp.replace(directory / MANIFEST)


def require(preset: Preset, data_dir: Path) -> None:
    """Raise `MissingWeights` unless every required file of the preset is present."""
    missing = preset.missing_files(models_dir(data_dir))
    if missing:
        raise MissingWeights(preset, missing)


def fetch_missing(preset_name: str, data_dir: Path, *, allowed: bool, log: Callable[[str], None] = print) -> list[Path]:
    """What `edalle bot` and `edalle worker` do on first start: fetch a preset whose files are missing.

    Nothing happens when every file is here, or for a generated preset (`tiny`: the engine makes it on first
    use). With `allowed` False (`--no-download`, `EDALLE_DOWNLOAD=0`) a missing file raises `MissingWeights`
    at once, as it always did; a download that fails (offline, the hub down) raises it too, with the reason,
    so the message still names the files and the ways to bring them. Returns the files fetched.
    """
    preset = get_model_set(preset_name)
    root = models_dir(data_dir)
    missing = [] if preset.generated else preset.missing_files(root)
    if not missing:
        return []
    if not allowed:
        raise MissingWeights(preset, missing)
    log(
        f"The '{preset.name}' model files are missing; fetching them now ({preset.description}; resumable: "
        'an interrupted download continues where it stopped). `--no-download` or EDALLE_DOWNLOAD=0 refuses instead.'
    )
    try:
        fetched = download(preset_name, data_dir, log=log)
    except DownloadFailed as exc:
        raise MissingWeights(preset, preset.missing_files(root), reason=str(exc)) from exc
    still_missing = preset.missing_files(root)
    if still_missing:
        raise MissingWeights(preset, still_missing, reason='the hub did not have every file')
    return fetched


# --------------------------------------------------------------------------- download


class DownloadFailed(FileNotFoundError):
    """A preset file could not be fetched, or arrived corrupted; the message is one line naming the file.

    A `FileNotFoundError` because that is what it leaves behind (the file is still missing), and
    because the CLI reports those as one short line with exit status 2 rather than a traceback.
    """


PARTIAL_SUFFIX = '.incomplete'


def download(preset_name: str, data_dir: Path, *, log: Callable[[str], None] = print) -> list[Path]:
    """Fetch every file of a preset from the Hugging Face Hub into the data directory.

    Each file streams into a partial file next to its final place and is renamed only once its
    hash matches the hub's (the LFS SHA-256, or the git blob id for small files), so an
    interrupted run (a dropped connection, Ctrl-C, a crash) resumes where it stopped with an HTTP
    Range request, and a bad transfer never lands under the real name. `huggingface_hub` does the
    HTTP (auth token, offline mode, retries that resume within one run, the progress bar); its own
    `hf_hub_download` is not used because recent versions (2.x, huggingface_hub#4228) write to a
    per-process temporary file deleted on failure, so a second run would start a multi-gigabyte
    file from zero.
    Files already recorded in the manifest with a matching hash are not fetched again.
    """
    preset = get_model_set(preset_name)
    if preset.generated:
        ensure_tiny(data_dir)
        return []
    from huggingface_hub import HfApi

    api = HfApi()
    fetched: list[Path] = []
    for component in preset.components:
        target = component.path(models_dir(data_dir))
        target.mkdir(parents=True, exist_ok=True)
        for hub_file in component.files:
            local = target / hub_file.local_name
            recorded = read_manifest(target).get(hub_file.local_name)
            if recorded and local.is_file() and sha256_of(local) == recorded['sha256']:
                log(f'already here: {local}')
                continue
            name = f'{hub_file.repo_id}/{hub_file.filename}'
            log(f'fetching {name}')
            try:
                sha256 = _fetch(api, hub_file, local, log)
            except DownloadFailed:
                raise  # corrupted: never skipped quietly, even for an optional file
            except Exception as exc:  # the hub's errors are many and long; the user needs which file and why
                if not hub_file.required:
                    log(f'skipped optional {name}: {_reason(exc)}')
                    continue
                raise DownloadFailed(f'could not fetch {name}: {_reason(exc)}') from exc
            record_in_manifest(target, hub_file.local_name, sha256, f'hub:{hub_file.repo_id}@{hub_file.revision or "main"}')
            fetched.append(local)
    return fetched


def _fetch(api: object, hub_file: HubFile, local: Path, log: Callable[[str], None]) -> str:
    """Download one file to `local` through a resumable partial file; return its SHA-256."""
    from urllib.parse import urlsplit

    repo_id, filename, revision = hub_file.repo_id, hub_file.filename, hub_file.revision
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(repo_id, filename, revision=revision)
    meta = get_hf_file_metadata(url)  # HEAD: the etag names this version of the file, size and final location
    headers = build_hf_headers()
    # Compressed bodies make byte ranges meaningless, and the size would no longer match.
    headers['Accept-Encoding'] = 'identity'
    if urlsplit(meta.location).netloc != urlsplit(url).netloc:
        headers.pop('authorization', None)  # a signed CDN URL: the token is for the hub only
    partial = _partial_path(local, meta.etag)
    for stale in local.parent.glob(f'.{local.name}.*{PARTIAL_SUFFIX}'):
        if stale != partial:
            stale.unlink()  # a partial of an older version of the file
    if meta.size is not None and partial.is_file() and partial.stat().st_size > meta.size:
        partial.unlink()
    resume_size = partial.stat().st_size if partial.is_file() else 0
    if resume_size:
        log(f'resuming {local.name} at {resume_size} bytes')
    # Unbuffered: every chunk that arrived is on disk, whatever stops the process.
    with partial.open('ab', buffering=0) as f:
        try:
            http_get(
                meta.location,
                f,
                resume_size=resume_size,
                headers=headers,
                expected_size=meta.size,
                displayed_filename=local.name,
            )
        except KeyboardInterrupt:
            log(f'{f.tell()} bytes of {local.name} kept in {partial}; run the command again to resume')
            raise
    sha256, git_sha1 = _hashes(partial)
    expected = _expected_hash(api, repo_id, filename, revision, meta.etag)
    if expected is not None:
        kind, want = expected
        got = sha256 if kind == 'sha256' else git_sha1
        if got != want:
            partial.unlink()
            raise DownloadFailed(
                f'{repo_id}/{filename} arrived corrupted ({kind} {got[:12]}… instead of the hub’s {want[:12]}…); '
                'it was removed, run the command again.'
            )
    if hub_file.sha256 is not None and sha256 != hub_file.sha256:
        partial.unlink()
        raise DownloadFailed(
            f'{repo_id}/{filename} is not the published file (sha256 {sha256[:12]}… instead of {hub_file.sha256[:12]}…); '
            f'it was removed. Bring the original {hub_file.local_name} by hand and run `edalle models import`.'
        )
    partial.replace(local)
    return sha256


def _partial_path(local: Path, etag: str | None) -> Path:
    """Hidden, and named after the hub's etag so that a partial never resumes into a newer version."""
    tag = ''.join(c for c in (etag or 'unknown') if c.isalnum())[:64]
    return local.with_name(f'.{local.name}.{tag}{PARTIAL_SUFFIX}')


def _hashes(path: Path, chunk_size: int = 1 << 20) -> tuple[str, str]:
    """SHA-256 and the git blob id in one pass: LFS files are named by the first, small files by the second."""
    sha256 = hashlib.sha256()
    git = hashlib.sha1(f'blob {path.stat().st_size}\0'.encode())
    with path.open('rb') as f:
        while block := f.read(chunk_size):
            sha256.update(block)
            git.update(block)
    return sha256.hexdigest(), git.hexdigest()


def _expected_hash(
    api: object, repo_id: str, filename: str, revision: str | None, etag: str | None
) -> tuple[str, str] | None:
    """What the file must hash to: ('sha256', …) for LFS files, ('git-sha1', …) for small git-stored ones.

    The paths-info API is the authority. If it cannot be reached, an LFS file's etag is its
    SHA-256 and stands in; otherwise only the size (checked while downloading) is known.
    """
    try:
        infos = api.get_paths_info(repo_id, [filename], revision=revision)  # type: ignore[attr-defined]
    except Exception:
        infos = []
    if infos:
        lfs = getattr(infos[0], 'lfs', None)
        if lfs is not None and getattr(lfs, 'sha256', None):
            return 'sha256', lfs.sha256
        if getattr(infos[0], 'blob_id', None):
            return 'git-sha1', infos[0].blob_id
    if etag and len(etag) == 64 and all(c in '0123456789abcdef' for c in etag):
        return 'sha256', etag
    return None


def _reason(exc: BaseException) -> str:
    """Why a fetch failed, in one line: the hub's messages run over several (request ids, hints)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if 'OfflineModeIsEnabled' in names:
        return 'offline mode is on (HF_HUB_OFFLINE is set)'
    from huggingface_hub import constants

    first_line = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    if names & {'ConnectError', 'ConnectionError', 'ConnectTimeout', 'TimeoutException', 'Timeout'}:
        return f'the Hugging Face Hub at {constants.ENDPOINT} is unreachable ({first_line})'
    return first_line[:300]


# --------------------------------------------------------------------------- import


@dataclass(frozen=True)
class ImportReport:
    copied: list[Path]
    missing: list[Path]
    rejected: list[str] = field(default_factory=list)  # one line per file left out: which, and why


def import_dir(source: Path, preset_name: str, data_dir: Path, *, progress: Progress | None = None) -> ImportReport:
    """Copy hand-brought files for a preset from `source` (searched recursively) into place.

    `flax_model.msgpack` and `config.json` exist for both DalleBart and the VQGAN, so each
    directory is classified by its `config.json`: a DalleBart config has `d_model`, a VQGAN
    config has `ch_mult`. A taming `last.ckpt` counts as the VQGAN, and open_clip's
    `open_clip_model.safetensors` (or `open_clip_pytorch_model.bin`) as CLIP. An upscaler's
    weights are found by their file name (`RealESRGAN_x4plus.pth`). A file whose published
    hash is pinned and differs is not kept, and is listed in `rejected`. Each file is hashed while it is
    copied (one read of a multi-gigabyte file, not two) and lands under its name only when complete.
    """
    preset = get_model_set(preset_name)
    if not source.is_dir():
        raise FileNotFoundError(f'{source} is not a directory.')
    root = models_dir(data_dir)
    copied: list[Path] = []
    rejected: list[str] = []
    for directory in sorted({p.parent for p in source.rglob('*') if p.is_file()}):
        component = _classify(directory, preset)
        if component is None:
            continue
        target = component.path(root)
        target.mkdir(parents=True, exist_ok=True)
        pinned = {f.local_name: f.sha256 for f in component.files if f.sha256}
        for name in _importable_names(component):
            src = directory / name
            if not src.is_file():
                continue
            partial = target / f'.{name}{PARTIAL_SUFFIX}'
            sha256 = _copy_hashing(src, partial, progress)
            if name in pinned and sha256 != pinned[name]:
                partial.unlink()
                rejected.append(f'{src}: sha256 {sha256[:12]}… is not the published file’s {pinned[name][:12]}…')
                continue
            partial.replace(target / name)
            record_in_manifest(target, name, sha256, f'import:{src}')
            copied.append(target / name)
    return ImportReport(copied, preset.missing_files(root), rejected)


def _copy_hashing(src: Path, dst: Path, progress: Progress | None, chunk_size: int = 1 << 20) -> str:
    """Copy `src` to `dst` and return its SHA-256, reading it once."""
    digest = hashlib.sha256()
    size, done = src.stat().st_size, 0
    with src.open('rb') as reader, dst.open('wb') as writer:
        while block := reader.read(chunk_size):
            digest.update(block)
            writer.write(block)
            done += len(block)
            if progress is not None:
                progress(f'copy {src.name}', done, size)
    return digest.hexdigest()


def _importable_names(component: Component) -> list[str]:
    names = [f.local_name for f in component.files]
    if component.kind == 'vqgan':
        names += ['last.ckpt', 'model.yaml', 'model.safetensors']
    if component.kind == 'clip':
        names += ['open_clip_pytorch_model.bin']
    return names


def _classify(directory: Path, preset: ModelSet) -> Component | None:
    for component in preset.components:
        if component.kind == 'upscale' and any((directory / f.local_name).is_file() for f in component.files):
            return component
    if not isinstance(preset, Preset):
        return None
    config = directory / 'config.json'
    if config.is_file():
        try:
            keys = json.loads(config.read_text())
        except (ValueError, UnicodeDecodeError):
            return None
        if 'd_model' in keys:
            return preset.dalle
        if 'ch_mult' in keys:
            return preset.vqgan_files
    if (directory / 'last.ckpt').is_file():
        return preset.vqgan_files
    if any((directory / n).is_file() for n in ('open_clip_model.safetensors', 'open_clip_pytorch_model.bin')):
        return preset.clip_files
    return None


# --------------------------------------------------------------------------- verify


@dataclass(frozen=True)
class Check:
    path: Path
    ok: bool
    detail: str


def verify(preset_name: str, data_dir: Path, *, check_shapes: bool = True, progress: Progress | None = None) -> list[Check]:
    """Check presence, recorded (and pinned) hashes and (optionally) tensor shapes of a preset's files."""
    preset = get_model_set(preset_name)
    root = models_dir(data_dir)
    checks: list[Check] = []
    for component in preset.components:
        directory = component.path(root)
        manifest = read_manifest(directory)
        for hub_file in component.files:
            path = directory / hub_file.local_name
            if not path.is_file():
                if hub_file.required:
                    checks.append(Check(path, False, 'missing'))
                continue
            recorded = manifest.get(hub_file.local_name)
            if hub_file.sha256 is not None:
                sha256 = sha256_of(path, progress=progress)
                ok = sha256 == hub_file.sha256
                detail = 'matches the published file' if ok else 'is not the published file'
                checks.append(Check(path, ok, f'sha256 {sha256[:12]}… {detail}'))
            elif recorded is None:
                checks.append(Check(path, True, 'present (no recorded hash: generated or copied by hand)'))
            elif sha256_of(path, progress=progress) != recorded['sha256']:
                checks.append(Check(path, False, f'hash differs from the one recorded at {recorded["source"]}'))
            else:
                checks.append(Check(path, True, f'sha256 {recorded["sha256"][:12]}… matches'))
    if check_shapes and all(c.ok for c in checks):
        checks.extend(_shape_checks(preset, data_dir, progress))
    return checks


def _shape_checks(preset: ModelSet, data_dir: Path, progress: Progress | None = None) -> list[Check]:
    """Load each network's weights against its config; loaders raise on any shape mismatch.

    An upscaler has no config: spandrel recognises its architecture from the state dict, and
    loading checks that it is a ×4 RGB super-resolution network.
    """
    root = models_dir(data_dir)
    loaders: list[tuple[Component, Callable[[], object]]] = []  # a loader may return its own detail (a str)
    if isinstance(preset, Preset):
        from edalle.loading import load_bart, load_clip, load_vqgan_for

        loaders += [
            (preset.dalle, lambda: load_bart(preset, data_dir)),
            (preset.vqgan_files, lambda: load_vqgan_for(preset, data_dir)),
            (preset.clip_files, lambda: load_clip(preset, data_dir)),
        ]
    for component in preset.components:
        if component.kind == 'upscale':
            loaders.append((component, lambda c=component: _check_upscaler(c, root)))
    checks = []
    for done, (component, loader) in enumerate(loaders):
        if progress is not None:
            progress('load', done, len(loaders))
        try:
            detail = loader()
            checks.append(
                Check(component.path(root), True, detail if isinstance(detail, str) else 'shapes match the config')
            )
        except Exception as exc:  # report every component, not just the first failure
            checks.append(Check(component.path(root), False, f'does not load: {exc}'))
    if progress is not None:
        progress('load', len(loaders), len(loaders))
    return checks


def _check_upscaler(component: Component, root: Path) -> str:
    from edalle.models.upscaler import load_upscaler

    upscaler = load_upscaler(component.required_paths(root)[0], 'cpu')
    return f'spandrel loads it as a ×{upscaler.scale} {upscaler.architecture} network'


# --------------------------------------------------------------------------- tiny


def ensure_tiny(data_dir: Path, seed: int = TINY_SEED) -> None:
    """Generate the tiny preset's files (tokenizer, DalleBart, VQGAN, CLIP, upscaler) if any is missing.

    The weights come from fixed seeds, so every machine makes the same tiny models.
    Written to a temporary directory first and renamed, so a crash leaves nothing half-made.
    """
    preset = get_preset('tiny')
    root = models_dir(data_dir)
    if not preset.missing_files(root):
        return
    import tempfile

    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        staging = Path(scratch)
        _write_tiny(preset, staging, seed)
        final = root / 'tiny'
        if final.exists():
            shutil.rmtree(final)
        (staging / 'tiny').rename(final)


def _write_tiny(preset: Preset, staging: Path, seed: int) -> None:
    from edalle.models import bart, bart_checkpoint, vqgan_checkpoint
    from edalle.models.clip import ClipModel, save_state_dict
    from edalle.models.vqgan import VQGAN
    from edalle.text import write_tiny_tokenizer

    dalle_dir = preset.dalle.path(staging)
    dalle_dir.mkdir(parents=True)
    write_tiny_tokenizer(dalle_dir, vocab_size=preset.bart.encoder_vocab_size)
    (dalle_dir / 'config.json').write_text(json.dumps(preset.bart.to_json_dict(), indent=2))
    bart_checkpoint.save_params(bart.init_params(preset.bart, seed), dalle_dir / 'flax_model.msgpack')

    vqgan_dir = preset.vqgan_files.path(staging)
    vqgan_dir.mkdir(parents=True)
    vqgan_checkpoint.save_safetensors(VQGAN.random(preset.vqgan, seed), vqgan_dir / 'model.safetensors')

    clip_dir = preset.clip_files.path(staging)
    clip_dir.mkdir(parents=True)
    save_state_dict(ClipModel.build_tiny(seed).model, clip_dir / 'model.safetensors')

    if preset.upscaler is not None:
        from edalle.models.upscaler import TINY_RRDBNET, write_rrdbnet_weights

        write_rrdbnet_weights(preset.upscaler.required_paths(staging)[0], TINY_RRDBNET, seed)
