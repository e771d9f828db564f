"""A ban covers every action a member can take: text and slash commands, buttons, selects, modals and reactions,
on his old grids and pictures too. Each is refused with the ban's reason, and nothing is posted or queued.

The real discord.py client talks to the local fake Discord (`tests/discord_fake`); no worker runs: the test
plays one through the store's own verbs, so a member has a finished grid and a picked picture to act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
from discord.ext import commands
from discord_fake import FakeDiscord, FakeMessage, run, running_bot, running_fake

from bot.bot import EDalleBot
from bot.guard import Guard
from bot.settings import Settings
from bot.utils import custom_ids
from bot.utils.views import dispatch, make_view
from edalle.jobs import BOT_WIDE, Ban, Job, SqliteJobStore, WorkerCaps

FAST = dict(preset='tiny', run_worker=False, sync_commands='always', guild_ready_timeout=0.05)
REASON = 'spamming the channel'


@contextlib.asynccontextmanager
async def edalle_bot(fake: FakeDiscord, tmp_path: Path) -> AsyncIterator[EDalleBot]:
    store = await SqliteJobStore.open(tmp_path / 'edalle.db')
    await store.set_setting(BOT_WIDE, 'cooldown_seconds', 0, actor_id=None, reason='tests: no waiting between jobs')
    settings = Settings(token=fake.token, data_dir=tmp_path, api_base=fake.api_base, gateway_url=fake.gateway_url, **FAST)
    bot = EDalleBot(settings=settings, store=store)
    try:
        async with running_bot(bot, fake, timeout=15):
            yield bot
    finally:
        await store.close()


async def say(fake: FakeDiscord, user: Any, text: str, **kwargs: Any) -> FakeMessage:
    await fake.send_user_message(fake.channel, user, text, **kwargs)
    return await fake.wait_for_message(fake.channel)


async def finished_grid(fake: FakeDiscord, bot: EDalleBot, tmp_path: Path, user: Any) -> tuple[Job, FakeMessage]:
    """`user` asks for a picture; the test plays the worker: the job succeeds with two candidates on disk."""
    from PIL import Image

    from bot.cogs.imagine import PICK

    status = await say(fake, user, '.imagine a lighthouse')
    (job,) = await bot.store.claim('test-worker', WorkerCaps(()), 30)
    assert job.lease is not None
    folder = tmp_path / 'images' / str(job.id) / '1'
    folder.mkdir(parents=True)
    for name in ('grid.png', 'candidate-1.png', 'candidate-2.png'):
        Image.new('RGB', (256, 256), (20, 60, 90)).save(folder / name)
    pictures = [
        {'index': i, 'path': f'images/{job.id}/1/candidate-{i + 1}.png', 'width': 256, 'height': 256} for i in (0, 1)
    ]
    await bot.store.complete(job.lease, {'pictures': pictures, 'grid': f'images/{job.id}/1/grid.png'}, 1.0)
    grid = await fake.wait_for_edit(status, lambda m: PICK.id(job.id, 0) in m.custom_ids(), timeout=10)
    return job, grid


# ---- a modal, as an operation's cog would open one -----------------------------------------------------------


def note_id(job_id: int) -> str:
    """Not an `Action` of `custom_ids`: that table is the bot's own (tests/test_bot_units.py compares it)."""
    return f'test:note:{job_id}'


class NoteButton(discord.ui.DynamicItem[discord.ui.Button], template=r'test:note:(?P<job_id>[0-9]{1,19})'):
    def __init__(self, job_id: int) -> None:
        super().__init__(discord.ui.Button(label='Add a note', custom_id=note_id(job_id)))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: Any, match: re.Match[str]) -> NoteButton:
        return cls(int(match['job_id']))

    async def callback(self, interaction: discord.Interaction) -> None:
        await dispatch(interaction, 'Notes', 'on_open', self.job_id)


class NoteModal(discord.ui.Modal, title='A note'):
    note = discord.ui.TextInput(label='Note', custom_id='note')

    def __init__(self, job_id: int) -> None:
        super().__init__(custom_id=f'testnote-modal-{job_id}')
        self.job_id = job_id

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await dispatch(interaction, 'Notes', 'on_note', self.job_id, self.note.value)


class Listener(commands.Cog):
    """A cog that listens to reactions the plain discord.py way, as a new operation's might."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, int]] = []

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        self.heard.append(('raw add', payload.user_id))

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        self.heard.append(('raw remove', payload.user_id))

    @commands.Cog.listener()
    async def on_reaction_add(self, reaction: discord.Reaction, user: discord.abc.User) -> None:
        self.heard.append(('add', user.id))


class Notes(commands.Cog):
    """A test operation's components: a button that opens a modal, and the modal's submit (which posts)."""

    def __init__(self) -> None:
        self.notes: list[tuple[int, str]] = []

    async def on_open(self, interaction: discord.Interaction, job_id: int) -> None:
        await interaction.response.send_modal(NoteModal(job_id))

    async def on_note(self, interaction: discord.Interaction, job_id: int, text: str) -> None:
        self.notes.append((job_id, text))
        await interaction.response.send_message(f'note on job #{job_id}: {text}')


def synced_commands(fake: FakeDiscord) -> list[tuple[str, list[dict[str, Any]]]]:
    """(name as typed, e.g. 'admin show'; its options) of every slash command the bot synced, subcommands expanded."""
    found = []

    def walk(prefix: str, options: list[dict[str, Any]]) -> None:
        subcommands = [o for o in options if o.get('type') in (1, 2)]
        if not subcommands:
            found.append((prefix, options))
        for sub in subcommands:
            walk(f'{prefix} {sub["name"]}', sub.get('options') or [])

    for scope in fake.commands.values():
        for command in scope.values():
            if command.get('type', 1) == 1:
                walk(command['name'], command.get('options') or [])
    return found


def slash_options(options: list[dict[str, Any]], job_id: int, fake: FakeDiscord) -> dict[str, Any]:
    """Values for the required options, by type (a choice where there are choices)."""
    by_type: dict[int, Any] = {3: 'a blue fox', 4: job_id, 5: False, 6: fake.alice, 7: fake.channel, 10: 1.0}
    by_type[11] = ('fox.png', b'\x89PNG\r\n\x1a\n', 'image/png')
    values = {}
    for option in options:
        if option.get('required'):
            choices = option.get('choices')
            values[option['name']] = choices[0]['value'] if choices else by_type[option['type']]
    return values


# ---- the tests -----------------------------------------------------------------------------------------------


def test_a_banned_member_is_refused_every_action_with_the_reason(
    tmp_path: Path, discord_errors: Any, bot_errors: Any
) -> None:
    """Bob's grid and picked picture predate his ban; after it, every door says why, privately where Discord
    allows, and nothing is posted (no candidate, no grid again, no note) or queued; an unban works at once."""
    from bot.cogs.expand import EXPAND, RATIOS
    from bot.cogs.imagine import PICK, REROLL

    async def main() -> None:
        async with running_fake() as fake, edalle_bot(fake, tmp_path) as bot:
            bob = fake.bob
            job, grid = await finished_grid(fake, bot, tmp_path, bob)
            await fake.click_button(grid, PICK.id(job.id, 0), bob)
            picked = await fake.wait_for_message(fake.channel, lambda m: 'candidate 1 of job' in m.content, timeout=10)
            notes, listener = Notes(), Listener()
            await bot.add_cog(notes)
            await bot.add_cog(listener)
            bot.add_dynamic_items(NoteButton)
            channel = bot.get_channel(fake.channel.id)
            assert isinstance(channel, discord.TextChannel)
            sent = await channel.send('Notes', view=make_view(NoteButton(job.id)))
            opened = await fake.click_button(sent.id, note_id(job.id), bob)
            await fake.wait_for_interaction_response(opened)
            assert opened.modal is not None  # bob opened the modal before the ban; he submits it after

            answer = await say(fake, fake.moderator, f'.admin ban {bob.mention} {REASON}')
            assert 'can no longer use' in answer.content
            since = fake.mark()

            def refused(message: FakeMessage) -> None:
                assert 'not allowed to use image commands here' in message.content and REASON in message.content, message

            # Text commands, every one the bot has (read-only ones, `.help` and `.admin` included), and with arguments
            # the ones that would post or queue: a reply each; `.job` posts nothing again.
            texts = [f'.{command.qualified_name}' for command in bot.walk_commands()]
            texts += ['.imagine a red fox', f'.job {job.id}', f'.cancel {job.id}']
            expected = {'.imagine', '.expand', '.job', '.info', '.queue', '.cancel', '.help', '.admin', '.admin ban'}
            assert expected <= set(texts)
            for text in texts:
                refused(await say(fake, bob, text))
            refused(await say(fake, bob, '.expand 16:9 a wider sea', reply_to=picked))
            texts.append('.expand (a reply)')

            # Every slash command the bot synced, hybrid and pure, subcommands too, its required options filled: ephemeral.
            slashes = [(name, slash_options(options, job.id, fake)) for name, options in synced_commands(fake)]
            assert {'imagine', 'expand', 'job', 'info', 'queue', 'cancel', 'admin show', 'admin ban'} <= {
                n for n, _ in slashes
            }
            slashes.append(('expand', {'job': job.id, 'ratio': '16:9'}))
            # /admin is shown only to members who can manage the server: Discord itself refuses it to bob
            slashes = [(name, options) for name, options in slashes if not name.startswith('admin')]
            for name, options in slashes:
                await fake.invoke_slash(name, options, bob)
                refused(await fake.wait_for_message(None, ephemeral=True))

            # Every button and select on the old grid, the old picture and the test cog's message: ephemeral.
            clicked = []
            for message in (grid, picked, fake.message(sent.id)):
                for component in message.iter_components():
                    custom_id = component.get('custom_id')
                    if component.get('type') == 2 and custom_id:
                        await fake.click_button(message, custom_id, bob)
                    elif component.get('type') == 3:
                        await fake.select(message, custom_id, [component['options'][-1]['value']], bob)
                    else:
                        continue
                    refused(await fake.wait_for_message(None, ephemeral=True))
                    clicked.append(custom_id)
            known = [PICK.id(job.id, 1), REROLL.id(job.id), custom_ids.cancel(job.id), custom_ids.info(job.id, 0)]
            known += [EXPAND.id(job.id, 0, '16x9'), RATIOS.id(job.id, 0), note_id(job.id)]
            assert set(known) <= set(clicked)

            # The modal opened before the ban: refused, its handler never ran.
            await fake.submit_modal(opened, {'note': 'hello'})
            refused(await fake.wait_for_message(None, ephemeral=True))
            assert notes.notes == []

            # Reactions on his own grid and picture: no listener hears them; he is told once, by DM.
            await fake.add_reaction(grid, '2️⃣', bob)
            refused(await fake.wait_for_message(fake.dm_channel(bob), timeout=5))
            await fake.add_reaction(picked, '↔️', bob)
            await fake.add_reaction(grid, '1️⃣', bob)
            await fake.remove_reaction(grid, '1️⃣', bob)
            await fake.add_reaction(grid, '1️⃣', fake.alice)  # others' reactions still reach the listeners
            await asyncio.sleep(0.5)
            assert len(fake.bot_messages(fake.dm_channel(bob))) == 1  # one note, not one per reaction
            assert sorted(listener.heard) == [('add', fake.alice.id), ('raw add', fake.alice.id)]

            # Nothing posted but the refusals (each a reply to his command), nothing queued or charged.
            posted = [
                e.obj for e in fake.events[since:] if e.kind == 'message_create' and e.obj.author.id == fake.bot_user.id
            ]
            public = [m for m in posted if not m.ephemeral and m.channel_id == fake.channel.id]
            assert len(public) == len(texts)
            for message in public:
                refused(message)
                assert not message.attachments and not message.custom_ids() and message.reference is not None
            assert [j.id for j in await bot.store.user_jobs(bob.id, active_only=False)] == [job.id]
            assert (await bot.store.quota(fake.guild.id, bob.id)).imagines_used == 1
            assert (await bot.store.get(job.id)).status.value == 'succeeded'  # ✖ did not close or cancel anything

            # Lifted: his old grid works again at once (the bot forgets its cached answer on unban).
            await say(fake, fake.moderator, f'.admin unban {bob.mention}')
            await fake.click_button(grid, PICK.id(job.id, 1), bob)
            await fake.wait_for_message(fake.channel, lambda m: 'candidate 2 of job' in m.content, timeout=10)
            reopened = await fake.click_button(sent.id, note_id(job.id), bob)  # a submitted modal is closed
            await fake.wait_for_interaction_response(reopened)
            await fake.submit_modal(reopened, {'note': 'hello again'})
            await fake.wait_for_message(fake.channel, lambda m: 'note on job' in m.content, timeout=10)
            assert notes.notes == [(job.id, 'hello again')]

    run(main(), 90)


def test_a_banned_admin_keeps_the_admin_commands_only(tmp_path: Path, discord_errors: Any, bot_errors: Any) -> None:
    """A bot admin under a ban may still use `.admin …` (so a ban can always be lifted), and nothing else."""

    async def main() -> None:
        async with running_fake() as fake, edalle_bot(fake, tmp_path) as bot:
            moderator = fake.moderator
            await say(fake, moderator, f'.admin ban {moderator.mention} testing the ban')
            answer = await say(fake, moderator, '.imagine a fox')
            assert 'not allowed' in answer.content and 'testing the ban' in answer.content
            await fake.invoke_slash('imagine', {'prompt': 'a fox'}, moderator)
            assert 'testing the ban' in (await fake.wait_for_message(None, ephemeral=True)).content
            assert 'Limits for' in (await say(fake, moderator, '.admin show')).content
            await fake.invoke_slash('admin show', {}, moderator)
            assert 'Limits for' in (await fake.wait_for_message(None, ephemeral=True)).content
            assert (
                'may use the image commands again'
                in (await say(fake, moderator, f'.admin unban {moderator.mention}')).content
            )
            assert 'queued' in (await say(fake, moderator, '.imagine a fox')).content
            assert len(await bot.store.user_jobs(moderator.id, active_only=False)) == 1

    run(main(), 60)


# ---- the guard's cache --------------------------------------------------------------------------------------


class CountingStore:
    def __init__(self) -> None:
        self.bans: dict[tuple[int | None, int], Ban] = {}
        self.reads = 0

    async def get_ban(self, guild_id: int | None, user_id: int) -> Ban | None:
        self.reads += 1
        await asyncio.sleep(0.01)
        return self.bans.get((guild_id, user_id))


def test_the_ban_cache_reads_once_per_member_and_expires() -> None:
    """One store read per member per `ttl` (shared by actions at the same moment); a ban or unban made elsewhere
    shows after `ttl`; `forget` (the bot's own ban/unban) shows at once; a ban's end is honoured from the cache."""

    async def main() -> None:
        now = [100.0]
        store = CountingStore()
        guard = Guard(type('FakeBot', (), {'store': store})(), ttl=3.0, clock=lambda: now[0])  # type: ignore[arg-type]
        assert await asyncio.gather(*(guard.ban_of(1, 7) for _ in range(20))) == [None] * 20
        assert store.reads == 1
        store.bans[(1, 7)] = Ban(1, 7, 'rude', None, 2, 0.0)
        now[0] += 2.9
        assert await guard.ban_of(1, 7) is None and store.reads == 1  # cached: not seen yet
        now[0] += 0.2
        assert (await guard.ban_of(1, 7)).reason == 'rude' and store.reads == 2  # type: ignore[union-attr]
        del store.bans[(1, 7)]
        guard.forget(1, 7)
        assert await guard.ban_of(1, 7) is None and store.reads == 3
        assert await guard.ban_of(2, 7) is None and store.reads == 4  # another server, another answer
        store.bans[(1, 8)] = Ban(1, 8, None, time.time() + 0.2, 2, 0.0)  # a ban that ends in 0.2 s
        assert await guard.ban_of(1, 8) is not None
        await asyncio.sleep(0.3)
        assert guard.cached(1, 8) == (True, None)  # over, though the cached answer is still fresh

    run(main())


def test_every_component_and_modal_goes_through_dispatch() -> None:
    """The guard stands in `dispatch`: a component or modal of any cog that called its cog directly would let a
    banned member through. Every `DynamicItem`'s `callback` and every `Modal`'s `on_submit` under `bot/` calls it."""
    import importlib
    import pkgutil

    import bot as bot_package

    for info in pkgutil.walk_packages(bot_package.__path__, 'bot.'):
        importlib.import_module(info.name)
    found = []
    for base, method in ((discord.ui.DynamicItem, 'callback'), (discord.ui.Modal, 'on_submit')):
        stack = list(base.__subclasses__())
        while stack:
            cls = stack.pop()
            stack.extend(cls.__subclasses__())
            if not cls.__module__.startswith('bot.'):
                continue
            own = cls.__dict__.get(method)
            assert own is not None, f'{cls.__qualname__} has no {method} of its own'
            assert 'dispatch(' in inspect.getsource(own), f'{cls.__module__}.{cls.__qualname__}.{method} bypasses dispatch'
            found.append(cls.__qualname__)
    assert {'PickButton', 'RerollButton', 'ExpandButton', 'RatioSelect', 'CancelButton', 'InfoButton'} <= set(found)
