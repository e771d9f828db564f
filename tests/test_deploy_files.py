"""The Docker and compose files against the traps a self-hoster falls into, read rather than run (no Docker here).

The compose files are parsed with PyYAML and their `${…}` references interpolated as `docker compose` does,
with the shipped `.env.example` as the project's `.env` (compose reads it for interpolation, and `env_file`
hands it to the containers); the Dockerfile and `.dockerignore` are read as text. Each rule below is a
mistake these files once made.
"""

from __future__ import annotations

import fnmatch
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILES = ('compose.yaml', 'compose.postgres.yaml', 'compose.worker.yaml')


class MissingVariable(Exception):
    """`${VAR:?message}` with VAR unset: compose refuses the whole file."""


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation: `$$`, `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`,
    `${VAR?err}`, with `${…}` nested in defaults."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith('$$', i):
            out.append('$')
            i += 2
        elif text.startswith('${', i):
            depth, j = 1, i + 2
            while depth:
                if text.startswith('${', j):
                    depth, j = depth + 1, j + 2
                else:
                    depth, j = depth - (text[j] == '}'), j + 1
            out.append(_expression(text[i + 2 : j - 1], env))
            i = j
        elif text[i] == '$' and (m := re.match(r'[A-Za-z_][A-Za-z0-9_]*', text[i + 1 :])):
            out.append(env.get(m[0], ''))
            i += 1 + len(m[0])
        else:
            out.append(text[i])
            i += 1
    return ''.join(out)


def _expression(body: str, env: dict[str, str]) -> str:
    m = re.match(r'([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])(.*))?$', body, re.S)
    assert m, body
    name, operator, rest = m[1], m[2], m[3] or ''
    value = env.get(name)
    unset = value is None or (operator is not None and operator.startswith(':') and value == '')
    if operator in (':-', '-'):
        return interpolate(rest, env) if unset else value  # type: ignore[return-value]
    if operator in (':?', '?'):
        if unset:
            raise MissingVariable(f'{name}: {rest}')
        return value  # type: ignore[return-value]
    return value or ''


def shipped_env() -> dict[str, str]:
    """What `cp .env.example .env` gives: the variables it sets, as compose and `docker run --env-file` read them."""
    return {key: value or '' for key, value in dotenv_values(REPO / '.env.example').items()}


def compose(name: str, operator_env: dict[str, str] | None = None) -> dict[str, Any]:
    """A compose file as `docker compose` sees it with the shipped `.env` (plus what the operator set)."""
    text = (REPO / name).read_text()
    return yaml.safe_load(interpolate(text, {**shipped_env(), **(operator_env or {})}))


def referenced(name: str) -> set[str]:
    return set(re.findall(r'\$\{([A-Za-z_][A-Za-z0-9_]*)', (REPO / name).read_text()))


def environment(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get('environment') or {}
    return dict(raw) if isinstance(raw, dict) else dict(item.split('=', 1) for item in raw)


def dockerfile_env() -> set[str]:
    text = (REPO / 'Dockerfile').read_text().replace('\\\n', ' ')
    names: set[str] = set()
    for line in text.splitlines():
        if line.strip().startswith('ENV '):
            names.update(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)=', line))
    return names


def test_the_interpolation_follows_compose() -> None:
    env = {'A': 'a', 'EMPTY': ''}
    assert interpolate('${A}-${B:-b}-${EMPTY:-e}-${EMPTY-e}-$$A-$A', env) == 'a-b-e--$A-a'
    assert interpolate('${B:-x${A}y}', env) == 'xay'
    with pytest.raises(MissingVariable, match='B: say so'):
        interpolate('${B:?say so}', env)
    with pytest.raises(MissingVariable):
        interpolate('${EMPTY:?empty is unset}', env)


# -- .env.example -----------------------------------------------------------------------------------------


def test_the_shipped_env_file_sets_nothing_but_empty_placeholders() -> None:
    """A copied `.env.example` must not choose for the operator: every value it sets overrides the images'
    and compose files' own choices (`EDALLE_DATA_DIR=./data` made `docker run --env-file .env` write a
    root-owned /app/data, and `EDALLE_RESULT_STORE=local` split compose.postgres.yaml's bot and worker)."""
    shipped = shipped_env()
    assert shipped == {'DISCORD_TOKEN': ''}


def test_the_env_file_never_touches_what_the_images_or_compose_set() -> None:
    chosen_elsewhere = dockerfile_env() | {'EDALLE_DATA_DIR', 'EDALLE_DATABASE_URL', 'EDALLE_RESULT_STORE'}
    for name in COMPOSE_FILES:
        chosen_elsewhere |= referenced(name)
        for service in (yaml.safe_load((REPO / name).read_text())['services']).values():
            chosen_elsewhere |= set(environment(service))
    assert {'EDALLE_DATA_DIR', 'XLA_PYTHON_CLIENT_PREALLOCATE', 'EDALLE_RESULT_STORE'} <= chosen_elsewhere
    assert not set(shipped_env()) & chosen_elsewhere


def test_every_setting_the_code_reads_is_documented_in_the_env_file() -> None:
    documented = (REPO / '.env.example').read_text()
    read = {
        name
        for package in ('edalle', 'bot')
        for path in (REPO / package).rglob('*.py')
        for name in re.findall(r"""['"](EDALLE_[A-Z0-9_]+|DISCORD_[A-Z_]+)['"]""", path.read_text())
    }
    assert len(read) > 20
    assert sorted(name for name in read if f'{name}=' not in documented) == []


# -- compose files ----------------------------------------------------------------------------------------


def test_postgres_bot_and_workers_share_a_result_store_with_the_shipped_env() -> None:
    bot = compose('compose.postgres.yaml', {'POSTGRES_PASSWORD': 'pw'})['services']['bot']
    worker = compose('compose.worker.yaml', {'EDALLE_DATABASE_URL': 'postgresql://edalle:pw@10.0.0.5:5432/edalle'})
    worker = worker['services']['worker']
    for service in (bot, worker):
        assert environment(service)['EDALLE_RESULT_STORE'] == 'database'
        assert environment(service)['EDALLE_DATA_DIR'] == '/data'
    assert environment(bot)['EDALLE_DATABASE_URL'] == 'postgresql://edalle:pw@db:5432/edalle'


def test_a_gpu_host_needs_only_the_database_url() -> None:
    """The worker's file asks for nothing but EDALLE_DATABASE_URL (no PostgreSQL password, no Discord token)."""
    assert 'POSTGRES_PASSWORD' not in (REPO / 'compose.worker.yaml').read_text()
    with pytest.raises(MissingVariable, match='EDALLE_DATABASE_URL'):
        compose('compose.worker.yaml')
    compose('compose.worker.yaml', {'EDALLE_DATABASE_URL': 'postgresql://edalle:pw@10.0.0.5:5432/edalle'})
    with pytest.raises(MissingVariable, match='POSTGRES_PASSWORD'):  # the database host is told what it lacks
        compose('compose.postgres.yaml')


def test_postgresql_is_not_published_on_every_address() -> None:
    published = []
    for name in COMPOSE_FILES:
        env = {'POSTGRES_PASSWORD': 'pw', 'EDALLE_DATABASE_URL': 'postgresql://x@h/db'}
        for service in compose(name, env)['services'].values():
            published += [str(port) for port in service.get('ports', [])]
    assert published == ['127.0.0.1:5432:5432']
    bound = compose('compose.postgres.yaml', {'POSTGRES_PASSWORD': 'pw', 'EDALLE_DB_BIND': '10.0.0.5'})
    assert bound['services']['db']['ports'] == ['10.0.0.5:5432:5432']


def test_workers_fetch_their_weights_and_the_bot_images_carry_no_models() -> None:
    env = {'POSTGRES_PASSWORD': 'pw', 'EDALLE_DATABASE_URL': 'postgresql://x@h/db'}
    workers = bots = 0
    for name in COMPOSE_FILES:
        for service in compose(name, env)['services'].values():
            command = service.get('command') or []
            if command[:1] == ['worker']:
                workers += 1
                assert '--no-download' not in command and environment(service).get('EDALLE_DOWNLOAD', '1') != '0'
                assert service['build']['target'] == 'gpu'
            if command[:1] == ['bot']:
                bots += 1
                assert '--no-worker' in command and service['build']['target'] == 'bot'
    assert (workers, bots) == (2, 2)


# -- Dockerfile and .dockerignore -------------------------------------------------------------------------


def _stages() -> dict[str, str]:
    text = (REPO / 'Dockerfile').read_text()
    parts = re.split(r'^FROM ', text, flags=re.M)[1:]
    return {re.search(r' AS (\w+)', part.splitlines()[0])[1]: part for part in parts}  # type: ignore[index]


def test_the_images_install_dependencies_first_with_cis_versions_and_python() -> None:
    text = (REPO / 'Dockerfile').read_text()
    version = re.search(r'^ARG PYTHON_VERSION=(\S+)$', text, re.M)
    assert version and version[1] == f'{sys.version_info.major}.{sys.version_info.minor}'  # the Python CI runs
    stages = _stages()
    assert {'bot', 'gpu'} <= set(stages) and list(stages)[-1] == 'gpu'  # the default target has the models
    assert re.match(r'nvidia/cuda:[\d.]+-base-ubuntu', stages['gpu'])  # -base: the wheels bring CUDA
    for name in ('bot', 'gpu'):
        body = stages[name]
        dependencies = body.index('-r pyproject.toml')
        assert '-c constraints.txt' in body[body.rfind('\n', 0, dependencies) : dependencies + 200]
        assert dependencies < body.index('COPY edalle') < body.index('--no-deps .')
        assert 'HEALTHCHECK' in body and '"edalle", "status"' in body
        assert 'index-url' not in body and 'torch==' not in body  # torch comes pinned by constraints.txt
    assert '--extra worker' in stages['gpu'] and '--extra cuda' in stages['gpu'] and '--extra worker' not in stages['bot']


def test_constraints_pin_one_torch_that_the_cuda_extra_accepts() -> None:
    pins = dict(
        line.split('==', 1)
        for line in (REPO / 'constraints.txt').read_text().splitlines()
        if '==' in line and not line.startswith('#')
    )
    major, minor = (int(part) for part in pins['torch'].split('.')[:2])
    assert (major, minor) >= (2, 11)  # the `cuda` extra's floor: PyPI's torch for CUDA 13
    assert pins['jax-cuda13-plugin'] == pins['jax'] == pins['jaxlib']


def _ignored(path: str, patterns: list[str]) -> bool:
    """`.dockerignore` matching, enough for these patterns: a pattern excludes a path or any folder above it."""
    parts = path.split('/')
    excluded = False
    for raw in patterns:
        negate, pattern = raw.startswith('!'), raw.lstrip('!').strip('/')
        candidates = ['/'.join(parts[: i + 1]) for i in range(len(parts))]
        if pattern.startswith('**/'):
            candidates = [c for i in range(len(parts)) for c in ['/'.join(parts[i : j + 1]) for j in range(i, len(parts))]]
            pattern = pattern[3:]
        if any(fnmatch.fnmatchcase(candidate, pattern) for candidate in candidates):
            excluded = not negate
    return excluded


def test_the_build_context_leaves_out_secrets_environments_and_data() -> None:
    patterns = [
        line.strip()
        for line in (REPO / '.dockerignore').read_text().splitlines()
        if line.strip() and not line.startswith('#')
    ]
    for path in (
        '.env',
        '.env.local',
        '.venv/bin/python',
        'data/edalle.db',
        'data/models/dalle-mini/flax_model.msgpack',
        '.git/HEAD',
        'out/run/grid.png',
        'edalle/__pycache__/cli.cpython-311.pyc',
    ):
        assert _ignored(path, patterns), path
    for path in (
        'pyproject.toml',
        'constraints.txt',
        'README.md',
        'LICENSE',
        'edalle/cli.py',
        'bot/bot.py',
        'migrations/sqlite/0001_jobs_settings_audit.sql',
        '.env.example',
    ):
        assert not _ignored(path, patterns), path
    copied = set(re.findall(r'^COPY (?!--from)(.+?) \S+$', (REPO / 'Dockerfile').read_text(), re.M))
    for sources in copied:
        for source in sources.split():
            assert (REPO / source).exists() and not _ignored(source, patterns), source


# -- README and CI ----------------------------------------------------------------------------------------


def _readme_commands() -> list[str]:
    section = (REPO / 'README.md').read_text().split('## The two set-up commands', 1)[1].split('\n## ', 1)[0]
    return re.findall(r'```bash\n(.+?)\n```', section, re.S)


def test_the_readme_names_two_set_up_commands_and_ci_runs_the_second_word_for_word() -> None:
    run, test = _readme_commands()
    assert run.endswith('.venv/bin/edalle bot') and "-e '.[worker]'" in run  # the local worker needs the models
    assert test.endswith('.venv/bin/python -m pytest') and "-e '.[test]'" in test
    assert '-c constraints.txt' in run and '-c constraints.txt' in test
    ci = [line for line in (REPO / '.ci' / 'run').read_text().splitlines() if line and not line.startswith('#')]
    assert test in ci
