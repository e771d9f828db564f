"""The bot's pure parts, without Discord: custom ids, settings, prompts, ratios, images, errors, supervisor."""

from __future__ import annotations

import asyncio
import importlib
import io
import itertools
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import discord
import pytest
from discord.ext import commands

from bot.admission import fit
from bot.cogs import expand as expand_cog
from bot.cogs import imagine as imagine_cog
from bot.cogs.canvas import ZOOM_PAN
from bot.cogs.dream import DREAM
from bot.cogs.expand import EXPAND, RATIOS
from bot.cogs.imagine import PICK, REMIX, REROLL, grid_view
from bot.cogs.repaint import REPAINT
from bot.cogs.upscale import UPSCALE
from bot.cogs.vary import VARY
from bot.errors import BlockedWord, NotAdmin, redact, unwrap, user_message
from bot.launcher import NO_TOKEN, NO_WORKER_LIBRARIES, preflight
from bot.operations import OperationCog, picture_view
from bot.settings import Settings, SettingsError
from bot.supervisor import Backoff, WorkerSupervisor, worker_env_with_threads, worker_threads
from bot.utils import custom_ids
from bot.utils.images import fit_bytes, upload_limit
from bot.utils.prompts import check_blocked, clean_prompt, fold
from bot.utils.ratios import OTHER_RATIOS, check_ratio
from bot.utils.views import DYNAMIC_ITEMS, status_view
from edalle import operations
from edalle.errors import EdalleError, QuotaExceeded
from edalle.jobs import GuildSettings, Limits
from edalle.media import write_timelapse
from edalle.operations import imagine as imagine_op
from edalle.operations.base import Picture

REPO = Path(__file__).resolve().parents[1]
BIG = 10**19 - 1  # the largest id the templates accept (SQLite rowids are below 2**63)


# -- custom ids ---------------------------------------------------------------------------------------------


def every_kind_of_id() -> list[str]:
    ids = []
    for job, index in itertools.product((1, 42, BIG), (0, 8, 99)):
        ids += [
            PICK.id(job, index),
            REROLL.id(job),
            custom_ids.cancel(job),
            EXPAND.id(job, index, '16x9'),
            EXPAND.id(job, index, '99x99'),
            RATIOS.id(job, index),
            custom_ids.info(job, index),
            custom_ids.timelapse(job),
            ZOOM_PAN.id(job, index),
            DREAM.id(job, index),
        ]
    return ids


def test_every_id_matches_exactly_one_template_and_fits_discord() -> None:
    templates = [re.compile(action.template) for action in custom_ids.ACTIONS.values()]
    for custom_id in every_kind_of_id():
        assert len(custom_id) <= custom_ids.MAX_LENGTH
        matching = [t.pattern for t in templates if t.fullmatch(custom_id)]
        assert len(matching) == 1, (custom_id, matching)


def test_dynamic_items_use_the_templates_and_ids_round_trip() -> None:
    modules = {importlib.import_module(operation.discord) for operation in operations.OPERATIONS}
    items = (*DYNAMIC_ITEMS, *(item for module in modules for item in module.ITEMS))
    templates = {action.template for action in custom_ids.ACTIONS.values()}
    assert {item.__discord_ui_compiled_template__.pattern for item in items} == templates
    action, match = custom_ids.parse(EXPAND.id(12, 3, '9x16'))
    assert (action, match['job_id'], match['index'], match['width'], match['height']) == ('expand', '12', '3', '9', '16')
    assert custom_ids.parse('persistent_view:green') is None
    assert custom_ids.parse('ed:pick:12:3:extra') is None


def candidate_view(job_id: int, index: int) -> discord.ui.View:
    """The view under a picked 256×256 candidate, as `picture_view` lays out the loaded operation cogs' controls."""
    bot = SimpleNamespace(cogs={'Imagine': imagine_cog.Imagine(None), 'Expand': expand_cog.Expand(None)})  # type: ignore[arg-type]
    return picture_view(bot, SimpleNamespace(id=job_id, result=None), Picture(index, 'x.png', 256, 256))  # type: ignore[arg-type]


def every_control_view(job_id: int, picture: Picture, result: dict | None = None, kind: str = 'imagine') -> list[list[dict]]:
    """The rows of components under a picture with every operation's cog loaded (the tiny preset: ⏫ is installed)."""
    fake = SimpleNamespace(settings=SimpleNamespace(data_dir=REPO / 'no-such-dir', preset='tiny'))
    modules = dict.fromkeys(importlib.import_module(operation.discord) for operation in operations.OPERATIONS)
    cogs = {
        name: value(fake)
        for module in modules
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, OperationCog) and getattr(value, 'operation', None) is not None
    }
    view = picture_view(SimpleNamespace(cogs=cogs), SimpleNamespace(id=job_id, kind=kind, result=result), picture)  # type: ignore[arg-type]
    return [row['components'] for row in view.to_components()]


def test_views_fit_discord_rows_and_every_item_is_persistent() -> None:
    for view in (grid_view(7, 9), candidate_view(7, 0), status_view(7)):
        assert view.timeout is None and view.is_persistent()
        rows = view.to_components()
        assert len(rows) <= 5 and all(len(row['components']) <= 5 for row in rows)
    picked = [c['custom_id'] for row in candidate_view(7, 2).to_components() for c in row['components']]
    assert picked == [EXPAND.id(7, 2, '16x9'), EXPAND.id(7, 2, '9x16'), custom_ids.info(7, 2), RATIOS.id(7, 2)]
    grid = [c['custom_id'] for row in grid_view(7, 9).to_components() for c in row['components']]
    assert grid == [PICK.id(7, i) for i in range(9)] + [REROLL.id(7), custom_ids.cancel(7), REMIX.id(7)]


def test_every_operation_fits_under_one_picture_and_a_recorded_run_gets_its_time_lapse_button() -> None:
    """Every operation's controls under a square candidate; under a widened picture whose run was recorded, 🎞️ before
    ℹ️, and Make square in the Zoom & pan… menu."""
    rows = every_control_view(7, Picture(2, 'x.png', 256, 256))
    assert [[c['custom_id'] for c in row] for row in rows] == [
        [
            EXPAND.id(7, 2, '16x9'),
            EXPAND.id(7, 2, '9x16'),
            UPSCALE.id(7, 2),
            VARY.id(7, 2, 'subtle'),
            VARY.id(7, 2, 'strong'),
        ],
        [REPAINT.id(7, 2), DREAM.id(7, 2), custom_ids.info(7, 2)],
        [RATIOS.id(7, 2)],
        [ZOOM_PAN.id(7, 2)],
    ]
    assert [o['value'] for o in rows[3][0]['options']] == [
        'zoom 1.5',
        'zoom 2',
        'pan left',
        'pan right',
        'pan up',
        'pan down',
    ]
    wide = Picture(0, 'w.png', 448, 256)
    rows = every_control_view(8, wide, {'pictures': [wide.to_json()], 'media': {'timelapse': 'images/8/t.gif'}}, 'expand')
    assert len(rows) <= 5 and all(len(row) <= 5 for row in rows)
    flat = [c['custom_id'] for row in rows for c in row]
    assert VARY.id(8, 0, 'subtle') not in flat and REPAINT.id(8, 0) in flat  # vary keeps rows of 256×256 pictures only
    assert flat.index(custom_ids.timelapse(8)) == flat.index(custom_ids.info(8, 0)) - 1
    (menu,) = [c for row in rows for c in row if c['custom_id'] == ZOOM_PAN.id(8, 0)]
    assert menu['options'][-1]['value'] == 'square' and menu['placeholder'] == 'Zoom & pan…'


def test_message_target_reads_the_job_behind_a_message() -> None:
    grid = [PICK.id(5, i) for i in range(9)] + [REROLL.id(5)]
    candidate = [EXPAND.id(5, 2, '16x9'), custom_ids.info(5, 2), RATIOS.id(5, 2)]
    assert custom_ids.first_match(PICK, grid)['job_id'] == '5' and custom_ids.picture_target(grid) is None
    assert custom_ids.picture_target(candidate) == (5, 2)
    assert custom_ids.picture_target([custom_ids.cancel(5)]) is None
    assert custom_ids.picture_target(['something:else']) is None


# -- settings -----------------------------------------------------------------------------------------------


def test_settings_from_a_dotenv_file(tmp_path: Path) -> None:
    """`.env` is read by python-dotenv (`edalle.startup.load_env_file`): comments, `export`, quotes, empty values."""
    from dotenv import dotenv_values

    env = tmp_path / '.env'
    env.write_text(
        textwrap.dedent(
            """\
            # a comment
            DISCORD_TOKEN=abc.def  # trailing comment
            export EDALLE_PREFIX='!'
            EDALLE_WORKER_ARGS="--batch 4 --lease-seconds 30"
            EDALLE_WORKER=
            """
        )
    )
    values = {key: value or '' for key, value in dotenv_values(env).items()}
    assert values == {
        'DISCORD_TOKEN': 'abc.def',
        'EDALLE_PREFIX': '!',
        'EDALLE_WORKER_ARGS': '--batch 4 --lease-seconds 30',
        'EDALLE_WORKER': '',
    }
    settings = Settings.from_env(values)
    assert settings.prefix == '!' and settings.worker_args == ('--batch', '4', '--lease-seconds', '30')
    assert settings.database == Path('data') / 'edalle.db' and settings.run_worker  # empty: the default
    assert settings.download and settings.text_commands
    assert 'abc.def' not in repr(settings)
    refusing = Settings.from_env({'EDALLE_DOWNLOAD': '0', 'EDALLE_TEXT_COMMANDS': 'off'})
    assert not refusing.download and not refusing.text_commands


def test_bad_settings_name_the_variable() -> None:
    with pytest.raises(SettingsError, match='EDALLE_WORKER'):
        Settings.from_env({'EDALLE_WORKER': 'maybe'})
    with pytest.raises(SettingsError, match='EDALLE_PROGRESS_SECONDS'):
        Settings.from_env({'EDALLE_PROGRESS_SECONDS': 'soon'})
    with pytest.raises(SettingsError, match='EDALLE_SYNC_COMMANDS'):
        Settings.from_env({'EDALLE_SYNC_COMMANDS': 'sometimes'})


def test_preflight_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert preflight(Settings(token='')) == NO_TOKEN
    # missing files are fetched on first start; with --no-download they are the problem, named with the fix
    assert preflight(Settings(token='x', data_dir=tmp_path, preset='mini')) is None
    problem = preflight(Settings(token='x', data_dir=tmp_path, preset='mini', download=False))
    assert problem is not None and 'edalle models download --preset mini' in problem and '--no-worker' in problem
    assert preflight(Settings(token='x', data_dir=tmp_path, preset='mini', run_worker=False, download=False)) is None
    assert preflight(Settings(token='x', data_dir=tmp_path, preset='tiny', download=False)) is None  # generated

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'torch' else real(name, *a))
    problem = preflight(Settings(token='x', data_dir=tmp_path, preset='tiny'))
    assert problem == NO_WORKER_LIBRARIES.format(missing='torch') and ".[worker]'" in problem
    assert preflight(Settings(token='x', data_dir=tmp_path, preset='tiny', run_worker=False)) is None


# -- prompts and ratios -------------------------------------------------------------------------------------


def test_blocked_words_are_whole_words_ignoring_case_and_accents() -> None:
    assert fold('Ça Va CAFÉ') == 'ca va cafe'
    with pytest.raises(BlockedWord, match='“café”'):
        check_blocked('a CAFE at night', ['café'])
    with pytest.raises(BlockedWord, match='gore'):
        check_blocked('lots of Göre!', ['gore'])
    check_blocked('a cafeteria', ['café'])  # not a whole word
    check_blocked('anything', [])


def test_fit_names_the_blocked_word_and_caps_candidates_with_the_settings_enqueue_read() -> None:
    draft = imagine_op.request(user_id=1, guild_id=2, channel_id=3, prompt='a CAFE', n=9, preset='tiny', request_key='k')
    with pytest.raises(BlockedWord, match='“café”'):
        fit(draft, GuildSettings(2, blocked_words=('café',)), Limits())
    fitted = fit(draft, GuildSettings(2), Limits(candidates_per_imagine=2))
    assert (fitted.payload['n'], fitted.compat_key, fitted.request_key) == (2, 'imagine:tiny:2', 'k')
    assert fit(draft, GuildSettings(2), Limits(candidates_per_imagine=16)) is draft


def test_long_prompts_are_cut_at_a_word_and_flagged() -> None:
    assert clean_prompt('  a   red\n fox ', 200) == ('a red fox', False)
    prompt, cut = clean_prompt('word ' * 100, 50)
    assert cut and len(prompt) <= 50 and prompt.endswith('word')


def test_ratios_are_checked_with_examples() -> None:
    assert check_ratio('16:9') == (16, 9)
    assert check_ratio('9x16') == (9, 16)
    for width, height, _ in OTHER_RATIOS:
        assert check_ratio(f'{width}:{height}') == (width, height)
    assert check_ratio('1:1') == (1, 1)  # widens a tall or wide picture; a square one is refused as it is queued
    for bad in ('10:1', '1:4', 'wide', '0:3'):
        with pytest.raises(EdalleError, match='16:9'):
            check_ratio(bad)


def test_the_bot_never_imports_model_code() -> None:
    code = textwrap.dedent(
        """
        import sys
        import bot.bot, bot.launcher, bot.cogs.imagine, bot.cogs.expand, bot.cogs.jobs, bot.cogs.admin, bot.cogs.errors
        import bot.cogs.canvas, bot.cogs.dream, bot.cogs.upscale, bot.sources
        from bot.utils.ratios import check_ratio
        from edalle.jobs import Limits
        from edalle.operations import OPERATIONS, zoom
        check_ratio('16:9')
        bot.cogs.dream.read_ratio('2:1')
        for operation in OPERATIONS:  # the checks and estimates the bot makes before queueing
            operation.estimate_seconds({'factor': 2.0, 'width': 256, 'height': 256, 'prompt': 'x'})
        zoom.OPERATION.check({'factor': 2.0, 'width': 256, 'height': 256}, Limits())
        heavy = [m for m in ('jax', 'torch', 'flax', 'open_clip', 'edalle.engine', 'edalle.worker') if m in sys.modules]
        print(heavy)
        """
    )
    out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '[]'


# -- images and errors --------------------------------------------------------------------------------------


def test_a_picture_over_the_upload_limit_is_reencoded_under_it() -> None:
    from PIL import Image

    noise = Image.effect_noise((448, 256), 80).convert('RGB')
    buffer = io.BytesIO()
    noise.save(buffer, format='PNG')
    data = buffer.getvalue()
    assert fit_bytes(data, 'a.png', len(data)).data == data
    upload = fit_bytes(data, 'a.png', 20_000)
    assert upload.reencoded and upload.filename == 'a.jpg' and len(upload.data) <= 20_000
    with Image.open(io.BytesIO(upload.data)) as image:
        assert image.format == 'JPEG'
    assert upload.note is not None and upload.note.startswith('Re-encoded as JPEG')


def test_an_animation_over_the_upload_limit_stays_animated() -> None:
    from PIL import Image

    frames = [Image.effect_noise((96, 96), 10 + 2 * i).convert('RGB') for i in range(30)]
    data = write_timelapse(frames, 10**9).data
    upload = fit_bytes(data, 'job-7-timelapse.gif', len(data) // 4)
    assert upload.reencoded and upload.filename == 'job-7-timelapse.gif' and len(upload.data) <= len(data) // 4
    assert upload.note is not None and 'frames' in upload.note
    with Image.open(io.BytesIO(upload.data)) as image:
        assert image.format == 'GIF' and image.is_animated and image.n_frames > 1


def test_the_upload_limit_follows_the_boost_level_like_discord_py() -> None:
    from unittest.mock import MagicMock

    mib = 1024 * 1024
    for tier, limit in {0: 10 * mib, 1: 10 * mib, 2: 50 * mib, 3: 100 * mib}.items():
        guild = discord.Guild(data={'id': '1', 'name': 'g', 'premium_tier': tier}, state=MagicMock())
        assert upload_limit(guild, None) == limit
        assert upload_limit(guild, 3 * mib) == 3 * mib  # EDALLE_MAX_UPLOAD_BYTES only lowers it
    assert upload_limit(None, None) == 10 * mib  # DMs: Discord's default since 2025-01-16


def test_errors_reach_members_as_sentences_or_ids(caplog: pytest.LogCaptureFixture) -> None:
    quota = QuotaExceeded('imagine', 5, resets_at=1_800_000_000 + 3600, now=1_800_000_000)
    assert user_message(commands.CommandInvokeError(quota), context='test') == str(quota)
    token = 'MTA' + 'x' * 23 + '.AbCdEf.' + 'y' * 30
    text = user_message(RuntimeError(f'boom with {token}'), context='test')
    match = re.search(r'error `([0-9a-f]{8})`', text)
    assert match and 'boom' not in text and 'Traceback' not in text
    assert any(match[1] in r.getMessage() and r.exc_info for r in caplog.records)
    assert token not in redact(f'token {token} in https://x/api/v10/webhooks/1/secret-token')
    assert 'secret-token' not in redact('https://x/api/v10/webhooks/1/secret-token')
    assert isinstance(
        unwrap(commands.HybridCommandError(discord.app_commands.CommandInvokeError(_cmd(), NotAdmin()))), NotAdmin
    )


def _cmd() -> discord.app_commands.Command:
    async def noop(interaction: discord.Interaction) -> None:
        pass

    return discord.app_commands.Command(name='noop', description='x', callback=noop)


# -- the supervisor -----------------------------------------------------------------------------------------


def test_the_worker_runs_niced_with_its_cpu_threads_capped_on_a_small_host(tmp_path: Path) -> None:
    assert [worker_threads(None, cores) for cores in (1, 2, 4, 8)] == [1, 1, 3, None]
    assert (worker_threads(0, 2), worker_threads(3, 2)) == (None, 3)
    env = worker_env_with_threads({'PATH': '/bin'}, 1)
    assert env['OMP_NUM_THREADS'] == env['OPENBLAS_NUM_THREADS'] == '1'
    assert env['XLA_FLAGS'] == '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1'
    mine = worker_env_with_threads({'OMP_NUM_THREADS': '2', 'XLA_FLAGS': '--xla_dump_to=/tmp/x'}, 3)
    assert mine['OMP_NUM_THREADS'] == '2' and mine['XLA_FLAGS'] == '--xla_dump_to=/tmp/x intra_op_parallelism_threads=3'
    assert worker_env_with_threads({'A': '1'}, None) == {'A': '1'}
    assert Settings.from_env({}).worker_nice == 10 and Settings.from_env({'EDALLE_WORKER_NICE': '0'}).worker_nice == 0

    async def main() -> None:
        out = tmp_path / 'nice'
        code = f'import os; open({str(out)!r}, "w").write(str(os.nice(0)))'
        child = WorkerSupervisor([sys.executable, '-c', code], nice=5, backoff=Backoff(first=60))
        await child.start()
        for _ in range(200):
            if out.exists() and out.read_text():
                break
            await asyncio.sleep(0.05)
        await child.stop()
        assert int(out.read_text()) == os.nice(0) + 5

    asyncio.run(main())


def test_backoff_doubles_and_resets_after_a_healthy_run() -> None:
    backoff = Backoff(first=1, cap=8, healthy_after=60)
    assert [backoff.next_delay(1) for _ in range(5)] == [1, 2, 4, 8, 8]
    assert backoff.next_delay(61) == 1


def test_supervisor_restarts_a_dying_worker_and_stops_a_live_one(tmp_path: Path) -> None:
    async def main() -> None:
        crashing = WorkerSupervisor([sys.executable, '-c', 'raise SystemExit(3)'], backoff=Backoff(first=0.05, cap=0.1))
        await crashing.start()
        for _ in range(100):
            if crashing.restarts >= 2:
                break
            await asyncio.sleep(0.05)
        assert crashing.restarts >= 2
        await crashing.stop()

        marker = tmp_path / 'stopped'
        code = (
            'import signal, sys, time\n'
            f'signal.signal(signal.SIGTERM, lambda *a: (open({str(marker)!r}, "w").close(), sys.exit(0)))\n'
            'time.sleep(60)'
        )
        sleeper = WorkerSupervisor([sys.executable, '-c', code], stop_timeout=10)
        await sleeper.start()
        await asyncio.sleep(0.3)
        assert sleeper.running
        assert await sleeper.stop() == 0 and marker.exists() and not sleeper.running

    asyncio.run(main())
