"""The local fake Discord, proven with the real discord.py client over 127.0.0.1.

Each test starts a fresh `FakeDiscord` and a small throwaway `commands.Bot`, then acts as Discord's users.
These tests pin down the fake's wire compatibility, so the bot's own end-to-end tests can trust it.
"""

from __future__ import annotations

import asyncio
import io
import os
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path
from typing import Any

import discord
import pytest
from discord import app_commands
from discord.ext import commands
from discord_fake import (
    FakeDiscordError,
    MessageFlags,
    fixtures,
    run,
    running_bot,
    running_fake,
)

discord_errors = fixtures.discord_errors
fake_discord_urls = fixtures.fake_discord_urls
fake_discord_server = fixtures.fake_discord_server


def png_bytes(width: int = 3, height: int = 2) -> bytes:
    """A valid tiny RGB PNG, built by hand so the test needs no imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))

    raw = b''.join(b'\x00' + bytes((x * 40 + y) % 256 for x in range(3 * width)) for y in range(height))
    header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b'')


class PickButton(discord.ui.DynamicItem[discord.ui.Button], template=r'pick:(?P<job>[0-9]+):(?P<index>[0-9])'):
    """A restart-proof button: everything the handler needs is in its custom_id, like the bot's grid buttons."""

    clicks: list[tuple[int, int, int]] = []

    def __init__(self, job: int, index: int) -> None:
        super().__init__(
            discord.ui.Button(label=str(index), custom_id=f'pick:{job}:{index}', style=discord.ButtonStyle.grey)
        )
        self.job = job
        self.index = index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: Any, /) -> PickButton:
        return cls(int(match['job']), int(match['index']))

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        self.clicks.append((self.job, self.index, interaction.user.id))
        if self.index % 2:
            await interaction.edit_original_response(content=f'picked {self.index} of job {self.job}')
        else:
            assert interaction.message is not None
            await interaction.message.edit(content=f'picked {self.index} of job {self.job} (bot token)')


class Recorder:
    """What the throwaway bot saw, for assertions."""

    def __init__(self) -> None:
        self.messages: list[discord.Message] = []
        self.reactions: list[discord.RawReactionActionEvent] = []
        self.errors: list[BaseException] = []
        self.events: asyncio.Queue[str] = asyncio.Queue()


def make_bot(*, message_content: bool = True, members: bool = False) -> tuple[commands.Bot, Recorder]:
    """A small bot with the shapes the real one uses: prefix commands, files, a grid view, a slash command."""
    intents = discord.Intents.default()
    intents.message_content = message_content
    intents.members = members
    bot = commands.Bot(command_prefix='.', intents=intents, guild_ready_timeout=0.05, help_command=None)
    seen = Recorder()

    async def setup_hook() -> None:
        bot.add_dynamic_items(PickButton)

    bot.setup_hook = setup_hook  # type: ignore[method-assign]

    @bot.listen()
    async def on_message(message: discord.Message) -> None:
        seen.messages.append(message)

    @bot.listen()
    async def on_raw_reaction_add(payload: discord.RawReactionActionEvent) -> None:
        seen.reactions.append(payload)
        seen.events.put_nowait('reaction')

    @bot.command()
    async def ping(ctx: commands.Context) -> None:
        await ctx.reply('pong')

    @bot.command()
    async def png(ctx: commands.Context) -> None:
        await ctx.send('here', file=discord.File(io.BytesIO(png_bytes()), filename='grid.png'))

    @bot.command()
    async def card(ctx: commands.Context) -> None:
        embed = discord.Embed(title='grid').set_image(url='attachment://grid.png')
        await ctx.send(embed=embed, file=discord.File(io.BytesIO(png_bytes()), filename='grid.png'))

    @bot.command()
    async def echo(ctx: commands.Context) -> None:
        """Download the user's attachment from the fake's CDN and post it back."""
        attachment = ctx.message.attachments[0]
        data = await attachment.read()
        await ctx.send(f'{attachment.filename} {len(data)}', file=discord.File(io.BytesIO(data), filename='back.png'))

    @bot.command()
    async def grid(ctx: commands.Context, job: int) -> None:
        view = discord.ui.View(timeout=None)
        for index in range(1, 10):
            view.add_item(PickButton(job, index))
        await ctx.send(f'job {job}', view=view)

    @bot.command()
    async def panel(ctx: commands.Context) -> None:
        view = discord.ui.View(timeout=None)
        button = discord.ui.Button(label='Private', custom_id='panel:private')
        swap = discord.ui.Button(label='Swap', custom_id='panel:swap')

        async def private(interaction: discord.Interaction) -> None:
            await interaction.response.send_message('only you', ephemeral=True)

        async def do_swap(interaction: discord.Interaction) -> None:
            await interaction.response.edit_message(content='swapped', view=None)

        button.callback = private  # type: ignore[method-assign]
        swap.callback = do_swap  # type: ignore[method-assign]
        view.add_item(button)
        view.add_item(swap)
        await ctx.send('panel', view=view)

    @bot.tree.command(description='Draw a prompt')
    @app_commands.describe(prompt='what to draw', count='how many')
    async def imagine(interaction: discord.Interaction, prompt: str, count: int = 9) -> None:
        await interaction.response.defer(thinking=True)
        await interaction.followup.send(f'queued {prompt!r} x{count}')

    @bot.hybrid_command(description='Widen an image')
    @commands.has_guild_permissions(attach_files=True)
    async def expand(ctx: commands.Context, image: discord.Attachment, ratio: str = '16:9') -> None:
        data = await image.read()
        await ctx.send(f'{ratio} {len(data)}', file=discord.File(io.BytesIO(data), filename='wide.png'))

    @bot.command()
    @commands.has_guild_permissions(manage_guild=True)
    async def limits(ctx: commands.Context) -> None:
        await ctx.send('limits for admins')

    @limits.error
    async def limits_error(ctx: commands.Context, error: commands.CommandError) -> None:
        await ctx.send(f'no: {type(error).__name__}')

    @bot.command()
    async def settings(ctx: commands.Context) -> None:
        view = discord.ui.View(timeout=None)
        options = [discord.SelectOption(label=r, value=r) for r in ('16:9', '4:3')]
        select: discord.ui.Select = discord.ui.Select(custom_id='settings:ratio', options=options)

        async def chose(interaction: discord.Interaction) -> None:
            modal = discord.ui.Modal(title='Note', custom_id='settings:modal')
            note: discord.ui.TextInput = discord.ui.TextInput(label='Note', custom_id='settings:note')
            modal.add_item(note)

            async def on_submit(submitted: discord.Interaction) -> None:
                await submitted.response.send_message(f'{select.values[0]} {note.value}')

            modal.on_submit = on_submit  # type: ignore[method-assign]
            await interaction.response.send_modal(modal)

        select.callback = chose  # type: ignore[method-assign]
        view.add_item(select)
        await ctx.send('settings', view=view)

    @bot.tree.command(description='Pick a style')
    async def style(interaction: discord.Interaction, name: str) -> None:
        await interaction.response.send_message(f'style {name}', ephemeral=True)

    @style.autocomplete('name')
    async def style_names(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=s, value=s) for s in ('anime', 'oil', 'origami') if s.startswith(current)]

    return bot, seen


# -- connection and intents -----------------------------------------------------------------------------------


def test_login_ready_guild_and_prefix_reply(discord_errors: fixtures.DiscordErrorCollector) -> None:
    async def main() -> None:
        bot, seen = make_bot()
        async with running_fake() as fake:
            started = time.monotonic()
            async with running_bot(bot, fake):
                assert time.monotonic() - started < 1.0
                guild = bot.get_guild(fake.guild.id)
                assert guild is not None and not guild.unavailable
                assert {c.name for c in guild.text_channels} == {'general', 'images'}
                assert bot.user is not None and bot.user.id == fake.bot_user.id
                assert bot.application_id == fake.application.id
                assert guild.me.guild_permissions.send_messages

                sent = await fake.send_user_message(fake.channel, fake.alice, '.ping')
                reply = await fake.wait_for_message(fake.channel)
                assert reply.content == 'pong'
                assert reply.reference is not None and reply.reference['message_id'] == str(sent.id)
                # Discord echoes the bot's own message over the gateway.
                for _ in range(50):
                    if any(m.id == reply.id for m in seen.messages):
                        break
                    await asyncio.sleep(0.01)
                own = next(m for m in seen.messages if m.id == reply.id)
                assert own.author == bot.user and own.content == 'pong'
                assert fake.requests_matching('POST', r'/channels/\d+/messages$')[0].json['content'] == 'pong'

    run(main())


def test_without_message_content_intent_prefix_commands_do_not_fire(discord_errors: fixtures.DiscordErrorCollector) -> None:
    async def main() -> None:
        bot, seen = make_bot(message_content=False)
        async with running_fake() as fake, running_bot(bot, fake):
            await fake.send_user_message(fake.channel, fake.alice, '.ping')
            await fake.send_user_message(fake.channel, fake.bob, f'{fake.bot_user.mention} hello')
            with pytest.raises(FakeDiscordError):
                await fake.wait_for_message(fake.channel, timeout=0.3)
            await asyncio.sleep(0.05)
            by_author = {m.author.id: m.content for m in seen.messages}
            assert by_author[fake.alice.id] == ''  # blanked, as Discord does
            assert by_author[fake.bob.id].endswith('hello')  # mentions of the bot keep their content

            channel = bot.get_channel(fake.channel.id)
            assert isinstance(channel, discord.TextChannel)
            own = await channel.send('grid for you')
            await fake.send_user_message(fake.channel, fake.alice, 'nice', reply_to=own.id)
            await asyncio.sleep(0.05)
            reply = seen.messages[-1]
            assert reply.content == 'nice'  # a reply pings the bot, so it is visible
            assert reply.reference is not None and reply.reference.resolved is not None
            assert reply.reference.resolved.content == 'grid for you'  # type: ignore[union-attr]

    run(main())


def test_privileged_intent_not_enabled_closes_with_4014(discord_errors: fixtures.DiscordErrorCollector) -> None:
    async def main() -> None:
        bot, _ = make_bot(message_content=True)
        async with running_fake() as fake:
            fake.set_privileged_intents(message_content=False)
            with pytest.raises(discord.PrivilegedIntentsRequired):
                async with running_bot(bot, fake):
                    pass

    run(main())


def test_gateway_resume_replays_missed_events(discord_errors: fixtures.DiscordErrorCollector) -> None:
    async def main() -> None:
        bot, _ = make_bot()
        async with running_fake() as fake, running_bot(bot, fake):
            assert await fake.disconnect_gateway() == 1
            await fake.send_user_message(fake.channel, fake.alice, '.ping')  # sent while disconnected: buffered
            await fake.wait_for_resume()
            reply = await fake.wait_for_message(fake.channel)
            assert reply.content == 'pong'
            assert (fake.gateway.identifies, fake.gateway.resumes) == (1, 1)

            await fake.request_reconnect()  # op 7: the client resumes
            await fake.wait_for_resume()
            await fake.invalidate_session(resumable=False)  # op 9 false: the client identifies again
            await fake.wait_for_ready()
            await fake.send_user_message(fake.channel, fake.alice, '.ping')
            assert (await fake.wait_for_message(fake.channel)).content == 'pong'
            assert (fake.gateway.identifies, fake.gateway.resumes) == (2, 2)

    run(main())


# -- files ----------------------------------------------------------------------------------------------------


def test_files_travel_intact_both_ways(discord_errors: fixtures.DiscordErrorCollector) -> None:
    async def main() -> None:
        bot, _ = make_bot()
        async with running_fake() as fake, running_bot(bot, fake):
            await fake.send_user_message(fake.channel, fake.alice, '.png')
            posted = await fake.wait_for_message(fake.channel)
            assert posted.content == 'here'
            [attachment] = posted.attachments
            assert (attachment.filename, attachment.content_type, attachment.data) == ('grid.png', 'image/png', png_bytes())
            request = fake.requests_matching('POST', r'/messages$')[-1]
            assert request.json['attachments'] == [{'id': 0, 'filename': 'grid.png'}]
            assert request.files[0].field == 'files[0]'

            photo = png_bytes(5, 4)
            await fake.send_user_message(fake.images_channel, fake.bob, '.echo', attachments=[('photo.png', photo)])
            echoed = await fake.wait_for_message(fake.images_channel)
            assert echoed.content == f'photo.png {len(photo)}'
            assert echoed.attachments[0].data == photo
            assert echoed.attachments[0].payload()['width'] == 5

            await fake.send_user_message(fake.channel, fake.alice, '.card')
            card = await fake.wait_for_message(fake.channel, lambda m: bool(m.embeds))
            assert card.embeds[0]['image']['url'] == card.attachments[0].url  # attachment:// resolved

    run(main())


def test_attachment_over_the_guild_limit_is_rejected(discord_errors: fixtures.DiscordErrorCollector) -> None:
    async def main() -> None:
        bot, _ = make_bot()
        async with running_fake() as fake, running_bot(bot, fake):
            fake.guild.filesize_limit = 100
            channel = bot.get_channel(fake.channel.id)
            assert isinstance(channel, discord.TextChannel)
            with pytest.raises(discord.HTTPException) as caught:
                await channel.send(file=discord.File(io.BytesIO(b'x' * 101), filename='big.bin'))
            assert (caught.value.status, caught.value.code) == (413, 40005)

            # Discord validates components; a custom_id over 100 characters is an Invalid Form Body.
            button = {'type': 2, 'style': 1, 'label': 'x', 'custom_id': 'x' * 101}
            route = discord.http.Route('POST', '/channels/{channel_id}/messages', channel_id=fake.channel.id)
            with pytest.raises(discord.HTTPException) as caught:
                await bot.http.request(route, json={'content': 'hi', 'components': [{'type': 1, 'components': [button]}]})
            assert caught.value.code == 50035 and 'components.0.components.0.custom_id' in str(caught.value)

    run(main())


# -- components -----------------------------------------------------------------------------------------------


def test_dynamic_button_defers_edits_and_survives_a_restart(discord_errors: fixtures.DiscordErrorCollector) -> None:
    async def main() -> None:
        PickButton.clicks.clear()
        async with running_fake() as fake:
            bot, _ = make_bot()
            async with running_bot(bot, fake):
                await fake.send_user_message(fake.channel, fake.alice, '.grid 42')
                grid = await fake.wait_for_message(fake.channel, lambda m: bool(m.components))
                assert grid.custom_ids() == [f'pick:42:{i}' for i in range(1, 10)]
                assert [len(row['components']) for row in grid.components] == [5, 4]

                click = await fake.click_button(grid, 'pick:42:3', fake.alice)
                await fake.wait_for_interaction_response(click)
                assert click.callback_type == 6  # deferred update
                edited = await fake.wait_for_edit(grid)
                assert edited.content == 'picked 3 of job 42'
                assert fake.requests_matching('PATCH', r'/webhooks/\d+/[^/]+/messages/@original$')
                with pytest.raises(FakeDiscordError):
                    await fake.click_button(grid, 'pick:42:99', fake.alice)

            bot2, _ = make_bot()  # a new process would start from nothing but the message on Discord
            async with running_bot(bot2, fake):
                click = await fake.click_button(grid, 'pick:42:4', fake.bob)
                edited = await fake.wait_for_edit(grid)
                assert edited.content == 'picked 4 of job 42 (bot token)'
                assert click.callback_type == 6
            assert PickButton.clicks == [(42, 3, fake.alice.id), (42, 4, fake.bob.id)]
            assert fake.gateway.identifies == 2

    run(main())


def test_ephemeral_reply_and_update_message(discord_errors: fixtures.DiscordErrorCollector) -> None:
    async def main() -> None:
        bot, _ = make_bot()
        async with running_fake() as fake, running_bot(bot, fake):
            await fake.send_user_message(fake.channel, fake.alice, '.panel')
            panel = await fake.wait_for_message(fake.channel, lambda m: bool(m.components))

            click = await fake.click_button(panel, 'panel:private', fake.bob)
            private = await fake.wait_for_message(fake.channel, ephemeral=True)
            assert (private.content, click.callback_type) == ('only you', 4)
            assert private.flags & MessageFlags.EPHEMERAL and private not in fake.messages_in(fake.channel)
            assert fake.ephemeral_messages == [private]

            click = await fake.click_button(panel, 'panel:swap', fake.bob)
            swapped = await fake.wait_for_edit(panel)
            assert (swapped.content, swapped.components, click.callback_type) == ('swapped', [], 7)

    run(main())


# -- reactions ------------------------------------------------------------------------------------------------


def test_reactions_reach_on_raw_reaction_add(discord_errors: fixtures.DiscordErrorCollector) -> None:
    async def main() -> None:
        bot, seen = make_bot()
        async with running_fake() as fake, running_bot(bot, fake):
            channel = bot.get_channel(fake.channel.id)
            assert isinstance(channel, discord.TextChannel)
            sent = await channel.send('react to me')
            await sent.add_reaction('1️⃣')  # the bot's own reaction is echoed too
            await asyncio.wait_for(seen.events.get(), 2)
            await fake.add_reaction(sent.id, '2️⃣', fake.alice)
            await asyncio.wait_for(seen.events.get(), 2)
            own, theirs = seen.reactions
            assert (own.user_id, str(own.emoji)) == (fake.bot_user.id, '1️⃣')
            assert (theirs.user_id, str(theirs.emoji), theirs.message_id) == (fake.alice.id, '2️⃣', sent.id)
            assert theirs.member is not None and theirs.member.id == fake.alice.id
            assert theirs.message_author_id == fake.bot_user.id
            assert fake.message(sent.id).reaction_users('1️⃣') == [fake.bot_user.id]
            with pytest.raises(discord.HTTPException) as caught:
                await sent.add_reaction(':one:')  # a shortcode is not an emoji to Discord
            assert caught.value.code == 10014

    run(main())


# -- slash commands -------------------------------------------------------------------------------------------


def test_slash_command_refused_until_synced_then_defer_and_followup(discord_errors: fixtures.DiscordErrorCollector) -> None:
    async def main() -> None:
        bot, _ = make_bot()
        async with running_fake() as fake, running_bot(bot, fake):
            with pytest.raises(FakeDiscordError):
                await fake.invoke_slash('imagine', {'prompt': 'a cat'}, fake.alice, fake.channel)
            synced = await bot.tree.sync()
            assert sorted(c.name for c in synced) == ['expand', 'imagine', 'style']
            assert [(scope, sorted(names)) for scope, names in fake.syncs] == [(None, ['expand', 'imagine', 'style'])]
            options = fake.synced_command('imagine')['options']
            assert [(o['name'], o.get('required', False)) for o in options] == [('prompt', True), ('count', False)]

            record = await fake.invoke_slash('imagine', {'prompt': 'a cat', 'count': 4}, fake.alice, fake.channel)
            await fake.wait_for_interaction_response(record)
            assert record.callback_type == 5
            followup = await fake.wait_for_message(fake.channel, lambda m: not m.loading)
            assert followup.content == "queued 'a cat' x4"
            assert fake.followups(record) == [followup]
            loading = fake.original_response(record)
            assert loading is not None and loading.loading

            fake.expire_interaction(record)
            with pytest.raises(discord.HTTPException) as caught:
                await discord.Webhook.partial(fake.application.id, record.token, client=bot).send('too late')
            assert caught.value.code == 50027

    run(main())


def test_hybrid_command_with_attachment_as_slash_and_prefix(discord_errors: fixtures.DiscordErrorCollector) -> None:
    async def main() -> None:
        bot, _ = make_bot()
        async with running_fake() as fake, running_bot(bot, fake):
            await bot.tree.sync()
            photo = png_bytes(6, 2)
            record = await fake.invoke_slash('expand', {'image': ('photo.png', photo), 'ratio': '21:9'}, fake.bob)
            reply = await fake.wait_for_message(fake.channel)
            assert (record.callback_type, reply.content) == (4, f'21:9 {len(photo)}')
            assert reply.attachments[0].data == photo  # a multipart interaction callback
            assert fake.original_response(record) is reply

            await fake.send_user_message(fake.channel, fake.alice, '.expand 4:3', attachments=[('p.png', photo)])
            reply = await fake.wait_for_message(fake.channel)
            assert reply.content == f'4:3 {len(photo)}'

    run(main())


def test_select_modal_and_autocomplete(discord_errors: fixtures.DiscordErrorCollector) -> None:
    async def main() -> None:
        bot, _ = make_bot()
        async with running_fake() as fake, running_bot(bot, fake):
            await bot.tree.sync()
            assert await fake.autocomplete('style', {'name': 'o'}, 'name', fake.alice) == [
                {'name': 'oil', 'value': 'oil'},
                {'name': 'origami', 'value': 'origami'},
            ]
            record = await fake.invoke_slash('style', {'name': 'oil'}, fake.alice)
            answer = await fake.wait_for_message(fake.channel, ephemeral=True)
            assert answer.content == 'style oil' and answer.interaction_metadata['name'] == 'style'

            await fake.send_user_message(fake.channel, fake.alice, '.settings')
            panel = await fake.wait_for_message(fake.channel, lambda m: bool(m.components))
            with pytest.raises(FakeDiscordError):
                await fake.select(panel, 'settings:ratio', ['1:1'], fake.alice)
            record = await fake.select(panel, 'settings:ratio', ['4:3'], fake.alice)
            await fake.wait_for_interaction_response(record)
            assert record.callback_type == 9 and record.modal is not None
            await fake.submit_modal(record, {'settings:note': 'wide please'})
            done = await fake.wait_for_message(fake.channel)
            assert done.content == '4:3 wide please'

    run(main())


def test_permissions_dms_and_nonce(discord_errors: fixtures.DiscordErrorCollector) -> None:
    async def main() -> None:
        bot, _ = make_bot(members=True)
        async with running_fake() as fake, running_bot(bot, fake):
            guild = bot.get_guild(fake.guild.id)
            assert guild is not None and guild.chunked and guild.member_count == 5
            assert fake.gateway.received and not [p for p in fake.gateway.received if p.get('op') == 8]

            await fake.send_user_message(fake.channel, fake.moderator, '.limits')
            assert (await fake.wait_for_message(fake.channel)).content == 'limits for admins'
            await fake.send_user_message(fake.channel, fake.alice, '.limits')
            assert (await fake.wait_for_message(fake.channel)).content == 'no: MissingPermissions'

            dm = fake.dm_channel(fake.bob)
            await fake.send_user_message(dm, fake.bob, '.ping')
            assert (await fake.wait_for_message(dm)).content == 'pong'
            user = await bot.fetch_user(fake.alice.id)
            sent = await user.send('hello alice')
            assert fake.message(sent.id).channel_id == fake.dm_channel(fake.alice).id

            channel = bot.get_channel(fake.channel.id)
            assert isinstance(channel, discord.TextChannel)
            first = await channel.send('once', nonce='job-7-result')
            again = await channel.send('once', nonce='job-7-result')  # discord.py sets enforce_nonce
            assert first.id == again.id
            assert [m.content for m in fake.bot_messages(fake.channel)].count('once') == 1

    run(main())


def test_enforced_nonces_as_discord_keeps_them(discord_errors: fixtures.DiscordErrorCollector) -> None:
    """Within the window the same nonce from the bot in a channel returns the first message; a deleted one is 404
    (not posted again); another channel, or after the window, is a new message."""

    async def main() -> None:
        bot, _ = make_bot()
        async with running_fake() as fake, running_bot(bot, fake):
            channel, other = bot.get_channel(fake.channel.id), bot.get_channel(fake.images_channel.id)
            assert isinstance(channel, discord.TextChannel) and isinstance(other, discord.TextChannel)
            first = await channel.send('result', nonce='edalle-job-1')
            assert (await channel.send('result again', nonce='edalle-job-1')).id == first.id
            elsewhere = await other.send('result', nonce='edalle-job-1')
            assert elsewhere.id != first.id

            gone = await channel.send('doomed', nonce='edalle-job-2')
            await gone.delete()
            with pytest.raises(discord.NotFound) as refused:
                await channel.send('doomed', nonce='edalle-job-2')
            assert refused.value.code == 10008

            fake.nonce_window_seconds = 0.0  # "the past few minutes" are over
            later = await channel.send('result', nonce='edalle-job-1')
            assert later.id != first.id
            assert [m.content for m in fake.bot_messages(fake.channel)] == ['result', 'result']

    run(main())


def test_an_error_after_saving_leaves_the_message_and_a_retry_with_the_nonce_returns_it(
    discord_errors: fixtures.DiscordErrorCollector,
) -> None:
    async def main() -> None:
        bot, _ = make_bot()
        async with running_fake() as fake, running_bot(bot, fake):
            channel = bot.get_channel(fake.channel.id)
            assert isinstance(channel, discord.TextChannel)
            route = rf'^/channels/{fake.channel.id}/messages$'
            fake.inject_error_after_saving('POST', route, 503)  # discord.py does not retry a 503 by itself
            with pytest.raises(discord.DiscordServerError):
                await channel.send('saved anyway', nonce='n-1')
            (saved,) = fake.bot_messages(fake.channel)
            assert saved.content == 'saved anyway'
            assert (await channel.send('saved anyway', nonce='n-1')).id == saved.id  # the caller's own retry

            fake.inject_error_after_saving('POST', route, 500)  # retried by discord.py after 1 s with the same nonce
            retried = await channel.send('once')  # discord.py sends a random nonce of its own when given none
            assert [r.status for r in fake.requests_matching('POST', route)][-2:] == [500, 200]
            fake.inject_error_after_saving('POST', route, 503)  # a caller that retries with a new nonce posts twice
            with pytest.raises(discord.DiscordServerError):
                await channel.send('twice')
            await channel.send('twice')
            contents = [m.content for m in fake.bot_messages(fake.channel)]
            assert contents == ['saved anyway', 'once', 'twice', 'twice'] and retried.content == 'once'

    run(main(), 30)


# -- rate limits, injected errors and unknown routes ----------------------------------------------------------


def test_429_is_retried_and_the_message_arrives_once(discord_errors: fixtures.DiscordErrorCollector) -> None:
    async def main() -> None:
        bot, _ = make_bot()
        async with running_fake() as fake, running_bot(bot, fake):
            fake.inject_429('POST', rf'^/channels/{fake.channel.id}/messages$', retry_after=0.05)
            await fake.send_user_message(fake.channel, fake.alice, '.ping')
            reply = await fake.wait_for_message(fake.channel)
            await asyncio.sleep(0.1)
            assert [m.content for m in fake.bot_messages(fake.channel)] == [reply.content] == ['pong']
            statuses = [r.status for r in fake.requests_matching('POST', rf'^/channels/{fake.channel.id}/messages$')]
            assert statuses == [429, 200]

    run(main())


def test_a_channel_message_limit_paces_discord_py_per_channel(discord_errors: fixtures.DiscordErrorCollector) -> None:
    """3 new messages per second per channel: discord.py reads the headers and waits by itself; another channel
    has its own budget; a request over the limit is answered as Discord does (429, `retry_after`)."""

    async def main() -> None:
        bot, _ = make_bot()
        async with running_fake() as fake, running_bot(bot, fake):
            limit = fake.limit_channel_messages(3, 1.0)
            general, images = bot.get_channel(fake.channel.id), bot.get_channel(fake.images_channel.id)
            assert isinstance(general, discord.TextChannel) and isinstance(images, discord.TextChannel)
            started = time.monotonic()
            await asyncio.gather(*(general.send(f'm{i}') for i in range(7)), images.send('elsewhere'))
            created = {e.obj.content: e.time - started for e in fake.events if e.kind == 'message_create'}
            assert sorted(c for c in created if c.startswith('m')) == [f'm{i}' for i in range(7)]
            times = sorted(t for c, t in created.items() if c.startswith('m'))
            assert times[2] < 0.5 and times[3] >= 0.9 and times[6] >= 1.9, times  # three per window
            assert created['elsewhere'] < 0.5  # its own channel, its own budget
            posts = fake.requests_matching('POST', rf'^/channels/{fake.channel.id}/messages$')
            assert all(r.status in (200, 429) for r in posts)
            assert limit.refused == sum(1 for r in posts if r.status == 429) <= 1

            # Over the limit by hand: Discord's 429, which discord.py waits out and retries.
            limit.windows[(str(fake.channel.id),)] = (time.monotonic() + 0.3, 3)
            await general.send('after a 429')
            refused = [
                r for r in fake.requests_matching('POST', rf'^/channels/{fake.channel.id}/messages$') if r.status == 429
            ]
            assert refused and 0 < refused[-1].response['retry_after'] <= 0.3
            assert fake.bot_messages(fake.channel)[-1].content == 'after a 429'

    run(main())


def test_injected_403_surfaces_as_forbidden(discord_errors: fixtures.DiscordErrorCollector) -> None:
    async def main() -> None:
        bot, _ = make_bot()
        async with running_fake() as fake, running_bot(bot, fake):
            channel = bot.get_channel(fake.channel.id)
            assert isinstance(channel, discord.TextChannel)
            fake.inject_status('POST', rf'/channels/{fake.channel.id}/messages', 403, count=1)
            with pytest.raises(discord.Forbidden) as caught:
                await channel.send('hello')
            assert caught.value.code == 50013
            await channel.send('hello again')  # only the next request was affected
            assert [m.content for m in fake.bot_messages(fake.channel)] == ['hello again']

            # A real permission overwrite gives the same answer, and discord.py sees the overwrite too.
            await fake.set_channel_permissions(fake.channel, fake.guild.everyone, deny=1 << 11)
            await asyncio.sleep(0.05)
            assert not channel.permissions_for(channel.guild.me).send_messages
            with pytest.raises(discord.Forbidden):
                await channel.send('blocked')

    run(main())


def test_unknown_route_is_recorded(discord_errors: fixtures.DiscordErrorCollector) -> None:
    async def main() -> None:
        bot, _ = make_bot()
        async with running_fake(strict=False) as fake, running_bot(bot, fake):
            guild = bot.get_guild(fake.guild.id)
            assert guild is not None
            with pytest.raises(discord.NotFound):
                await guild.fetch_emojis()
            [request] = fake.unknown_requests
            assert (request.method, request.path) == ('GET', f'/guilds/{fake.guild.id}/emojis')
            with pytest.raises(FakeDiscordError):
                fake.assert_no_unknown_routes()

    run(main())


# -- a bot in another process ---------------------------------------------------------------------------------

SUBPROCESS_BOT = textwrap.dedent(
    """
    import os, yarl, discord, discord.gateway, discord.http
    from discord.ext import commands

    discord.http.Route.BASE = os.environ['DISCORD_API_BASE']
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(os.environ['DISCORD_GATEWAY_URL'])
    intents = discord.Intents.default()
    intents.message_content = True
    bot = commands.Bot(command_prefix='.', intents=intents, guild_ready_timeout=0.05)

    @bot.command()
    async def ping(ctx):
        await ctx.send('pong from a subprocess')
        await bot.close()

    bot.run(os.environ['DISCORD_TOKEN'], log_handler=None)
    """
)


def test_subprocess_bot_pointed_by_environment(
    fake_discord_server: fixtures.ThreadedFakeDiscord, fake_discord_urls: fixtures.DiscordURLs, tmp_path: Path
) -> None:
    script = tmp_path / 'bot.py'
    script.write_text(SUBPROCESS_BOT)
    env = {**os.environ, **fake_discord_urls.env}
    process = subprocess.Popen([sys.executable, str(script)], env=env)
    try:
        fake_discord_server.wait_for_ready(timeout=20)
        server = fake_discord_server
        server.send_user_message(server.channel, server.alice, '.ping')
        reply = server.wait_for_message(server.channel, timeout=10)
        assert reply.content == 'pong from a subprocess'
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
