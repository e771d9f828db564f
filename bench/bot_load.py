"""The bot under load: many members send `.imagine` at once through the fake Discord; is every one served well?

The REAL entry point (`python -m edalle.cli bot`) runs as a subprocess pointed at the fake Discord
(`tests/discord_fake`) by environment variables, with its supervised `tiny` worker (or `--workers N`:
`--no-worker` plus N separate worker processes). After one warm-up job (so the worker has compiled),
MEMBERS members of one guild each send one `.imagine` within WINDOW_SECONDS, and the script measures:

- acknowledgement latency per member: from the fake receiving the member's message to the fake receiving
  the bot's reply (the status message that names the job) — both on this process's monotonic clock;
- exactly once: one result (the status message edited into the grid, or a new grid message) per job, no
  duplicates, none missing; and in the database every job succeeded and delivered, each member charged once;
- fairness: each member's wait from ack to result (min / median / max, max ÷ median) and how many
  later members' jobs overtook it (a FIFO-per-round-robin queue allows about workers × batch);
- the bot's event-loop lag, from its opt-in monitor (`EDALLE_LOOP_MONITOR=1`, `bot/loop_monitor.py`).

    .venv/bin/python bench/bot_load.py                     # 200 members, 3 s window, 2 candidates each
    .venv/bin/python bench/bot_load.py --members 10 --candidates 1 --json out.json
    .venv/bin/python bench/bot_load.py --profile           # cProfile of the bot process, top functions
    .venv/bin/python bench/bot_load.py --workers 0         # no worker: acknowledgements only, ~10 s (profiling)
    .venv/bin/python bench/bot_load.py --progress-seconds 30 --worker-nice 10   # the knobs tried in RESULTS.md

Targets (issue 7): p99 acknowledgement < 300 ms; the bot's loop never blocked > 100 ms. Exit status 1 when
a job was lost or answered twice (or the run timed out); `--strict` also fails on a missed target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import random
import re
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'tests'))  # the fake Discord lives with the tests
sys.path.insert(0, str(REPO))

from discord_fake import FakeDiscord, FakeUser, RecordedRequest  # noqa: E402

# ----------------------------------------------------------------------------- config
MEMBERS = 200  # simulated members, one `.imagine` each
WINDOW_SECONDS = 3.0  # all members send within this window (uniformly random instants, seeded)
CANDIDATES = 2  # candidates per imagine (bot-wide admin limit `candidates_per_imagine`; the default is 9)
WORKERS = 1  # 1: the bot's supervised worker; N > 1: --no-worker plus N separate worker processes
WORKER_BATCH = 4  # worker --batch: compatible imagine jobs run as one batch
SEED = 1234  # send times and prompts
PROGRESS_SECONDS = 3.0  # the bot's default: at most one progress edit per status message this often
RESULT_TIMEOUT = 1800.0  # seconds for the whole queue to drain
ACK_P99_TARGET_MS = 300.0
LOOP_BLOCK_TARGET_MS = 100.0
# Admin limits raised bot-wide (guild 0) before the bot starts, so 200 members are not refused by the
# default queue cap (200 queued + running) and every imagine asks for CANDIDATES candidates.
ADMIN_LIMITS: dict[str, Any] = {'queue_cap': 10_000}
DEFAULT_CACHE = Path(tempfile.gettempdir()) / 'edalle-bench-cache'  # tiny weights and JAX's compile cache, reused
# -----------------------------------------------------------------------------

WORDS = ('lighthouse', 'fox', 'teapot', 'castle', 'robot', 'forest', 'city', 'whale', 'violin', 'desert')
STYLES = ('oil painting', 'pixel art', 'watercolour', 'photo', 'pencil sketch', 'isometric render')
JOB_ID = re.compile(r'job #(\d+)')
PICK_ID = re.compile(r'ed:pick:(\d+):')
MESSAGE_PATH = re.compile(r'^/channels/(\d+)/messages(?:/(\d+))?$')


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))]


def custom_ids(body: Any) -> list[str]:
    """Every component custom_id in a recorded message request body."""
    found: list[str] = []

    def walk(items: Any) -> None:
        for item in items or []:
            if isinstance(item, dict):
                if 'custom_id' in item:
                    found.append(str(item['custom_id']))
                walk(item.get('components'))

    if isinstance(body, dict):
        walk(body.get('components'))
    return found


def is_grid(body: Any) -> bool:
    return any(PICK_ID.match(cid) for cid in custom_ids(body))


def load_average() -> str:
    try:
        return ' '.join(Path('/proc/loadavg').read_text().split()[:3])
    except OSError:
        return 'unknown'


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a live process, from /proc (Linux); None elsewhere or when it is gone."""
    try:
        fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class Member:
    user: FakeUser
    prompt: str
    offset: float  # seconds after the burst starts
    message_id: int | None = None
    sent_at: float | None = None  # monotonic, when the fake got the member's message
    ack_at: float | None = None  # monotonic, when the fake got the bot's reply to it
    ack_text: str = ''
    job_id: int | None = None
    result_at: float | None = None  # monotonic, when the fake got the first result post for the job
    result_posts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def supervised(args: argparse.Namespace) -> bool:
    """One worker, not niced: the bot's own supervised child; otherwise separate worker processes."""
    return args.workers == 1 and not args.worker_nice


def bot_env(fake: FakeDiscord, data_dir: Path, args: argparse.Namespace) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(('DISCORD_', 'EDALLE_'))}
    return {
        **keep,
        **fake.env(),
        'EDALLE_DATA_DIR': str(data_dir),
        'EDALLE_PRESET': 'tiny',
        'EDALLE_GUILD_READY_TIMEOUT': '0.05',
        'EDALLE_SYNC_COMMANDS': 'never',
        'EDALLE_WORKER_ARGS': f'--batch {args.batch} --poll 0.2 --kinds imagine',
        'EDALLE_WORKER': '1' if supervised(args) else '0',  # 0 workers: nothing runs, only acks are measured
        'EDALLE_LOOP_MONITOR': '1',
        'EDALLE_LOOP_MONITOR_FILE': str(data_dir / 'loop-monitor.json'),
        'EDALLE_LOG_LEVEL': 'INFO',
        'EDALLE_PROGRESS_SECONDS': str(args.progress_seconds),
        'JAX_PLATFORMS': 'cpu',
        'PYTHONUNBUFFERED': '1',
    }


async def configure_limits(db: Path, candidates: int) -> dict[str, Any]:
    """Raise the bot-wide admin limits in the (fresh) database, as `.admin set` would."""
    from edalle.jobs import SqliteJobStore
    from edalle.jobs.limits import BOT_WIDE

    limits = {**ADMIN_LIMITS, 'candidates_per_imagine': candidates}
    store = await SqliteJobStore.open(db)
    try:
        for key, value in limits.items():
            await store.set_setting(BOT_WIDE, key, value, actor_id=None, reason='bench/bot_load.py')
    finally:
        await store.close()
    return limits


async def wait_for_log(log: Path, pattern: str, timeout: float, proc: asyncio.subprocess.Process) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    regex = re.compile(pattern)
    while time.monotonic() < deadline:
        match = regex.search(log.read_text(errors='replace')) if log.exists() else None
        if match:
            return match
        if proc.returncode is not None:
            break
        await asyncio.sleep(0.1)
    raise RuntimeError(f'no {pattern!r} in the bot log within {timeout} s:\n{log.read_text(errors="replace")[-3000:]}')


class Tally:
    """Reads the fake's request log: which bot request acknowledged which member, which posted which result."""

    def __init__(self, fake: FakeDiscord, members: list[Member], first_request: int) -> None:
        self.fake = fake
        self.by_message = {m.message_id: m for m in members if m.message_id is not None}
        self.by_job: dict[int, Member] = {}
        self.status_message_job: dict[int, int] = {}  # bot status message id -> job id
        self.seen = first_request
        self.refusals: list[str] = []
        self.stray_results: list[int] = []  # result posts for jobs no member is waiting on

    def update(self) -> None:
        requests: list[RecordedRequest] = self.fake.requests
        for request in requests[self.seen :]:
            if request.status is None:  # still being answered: look again next time
                break
            self.seen += 1
            self._one(request)

    def _one(self, request: RecordedRequest) -> None:
        match = MESSAGE_PATH.match(request.path)
        if match is None or request.status >= 300 or not isinstance(request.json, dict):  # type: ignore[operator]
            return
        body = request.json
        if request.method == 'POST' and match[2] is None:
            reference = (body.get('message_reference') or {}).get('message_id')
            member = self.by_message.get(int(reference)) if reference else None
            if member is not None and member.ack_at is None:
                member.ack_at, member.ack_text = request.time, str(body.get('content', ''))
                found = JOB_ID.search(member.ack_text)
                if found is None:
                    self.refusals.append(member.ack_text)
                    return
                member.job_id = int(found[1])
                self.by_job[member.job_id] = member
                message_id = int((request.response or {}).get('id', 0))
                self.status_message_job[message_id] = member.job_id
                return
        picks = {int(m[1]) for cid in custom_ids(body) if (m := PICK_ID.match(cid))}
        for job_id in picks:  # a grid: the result of that imagine job (an edit of its status message, or a new post)
            member = self.by_job.get(job_id)
            if member is None:
                self.stray_results.append(job_id)
                continue
            member.result_posts += 1
            if member.result_at is None:
                member.result_at = request.time

    def answered(self) -> int:
        return sum(1 for m in self.by_job.values() if m.result_posts)


async def database_checks(db: Path, members: list[Member], guild_id: int) -> dict[str, Any]:
    """Exactly once and quota, as the job rows record them."""
    conn = sqlite3.connect(f'file:{db}?mode=ro', uri=True)
    conn.row_factory = sqlite3.Row
    try:
        wanted = {m.user.id for m in members}
        rows = [r for r in conn.execute('SELECT * FROM jobs') if r['user_id'] in wanted]
    finally:
        conn.close()
    per_user: dict[int, int] = {}
    for row in rows:
        per_user[row['user_id']] = per_user.get(row['user_id'], 0) + 1

    from edalle.jobs import SqliteJobStore

    store = await SqliteJobStore.open(db, migrate=False)
    try:
        used = [(await store.quota(guild_id, m.user.id)).imagines_used for m in members]
    finally:
        await store.close()
    return {
        'jobs': len(rows),
        'succeeded': sum(1 for r in rows if r['status'] == 'succeeded'),
        'delivered': sum(1 for r in rows if r['delivered_at'] is not None),
        'result_is_status_message': sum(1 for r in rows if r['result_message_id'] == r['status_message_id']),
        'members_with_one_job': sum(1 for n in per_user.values() if n == 1),
        'members_charged_once': sum(1 for n in used if n == 1),
        'members_charged_twice_or_more': sum(1 for n in used if n > 1),
    }


async def run_load(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    cache = args.cache_dir
    (cache / 'models').mkdir(parents=True, exist_ok=True)
    (cache / 'jax-cache').mkdir(parents=True, exist_ok=True)
    data_dir = work / 'data'
    data_dir.mkdir()
    (data_dir / 'models').symlink_to(cache / 'models')  # tiny weights are generated once, then reused
    (data_dir / 'jax-cache').symlink_to(cache / 'jax-cache')
    db = data_dir / 'edalle.db'
    limits = await configure_limits(db, args.candidates)

    fake = FakeDiscord()
    await fake.start()
    rng = random.Random(args.seed)
    members: list[Member] = []
    for i in range(args.members):
        user = fake.world.add_user(f'member{i:03d}')
        fake.world.add_member(fake.guild, user)
        prompt = f'{rng.choice(WORDS)} and {rng.choice(WORDS)}, {rng.choice(STYLES)} #{i}'
        members.append(Member(user, prompt, rng.uniform(0.0, args.window)))

    env = bot_env(fake, data_dir, args)
    log_path = work / 'bot.log'
    argv = [sys.executable, '-m', 'edalle.cli', 'bot']
    profile_path = work / 'bot.prof'
    if args.profile:
        argv = [sys.executable, '-m', 'cProfile', '-o', str(profile_path), '-m', 'edalle.cli', 'bot']
    log_file = log_path.open('wb')
    bot = await asyncio.create_subprocess_exec(
        *argv, cwd=work, env=env, stdout=log_file, stderr=asyncio.subprocess.STDOUT, start_new_session=True
    )
    workers: list[asyncio.subprocess.Process] = []
    worker_pids: list[int] = []
    result: dict[str, Any] = {}
    try:
        if not supervised(args):
            for n in range(args.workers):
                worker_log = (work / f'worker{n}.log').open('wb')
                proc = await asyncio.create_subprocess_exec(
                    *[sys.executable, '-m', 'edalle.worker', '--preset', 'tiny', '--data-dir', str(data_dir)],
                    *['--db', str(db), '--batch', str(args.batch), '--poll', '0.2', '--kinds', 'imagine'],
                    cwd=work,
                    env=env,
                    stdout=worker_log,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=(lambda: os.nice(args.worker_nice)) if args.worker_nice else None,
                )
                workers.append(proc)
                worker_pids.append(proc.pid)
        if supervised(args):
            worker_pids.append(int((await wait_for_log(log_path, r'worker started \(pid (\d+)\)', 120, bot))[1]))
        await fake.wait_for_ready(timeout=120)
        await wait_for_log(log_path, r'connected as', 60, bot)

        # Warm-up: one job end to end, so the worker has loaded and compiled before the burst.
        started = time.monotonic()
        if args.warmup and args.workers > 0:
            await fake.send_user_message(fake.channel, fake.alice, '.imagine a warm-up lighthouse')
            status = await fake.wait_for_message(fake.channel, timeout=30)
            await fake.wait_for_edit(status, lambda m: any(c.startswith('ed:pick:') for c in m.custom_ids()), timeout=600)
            await asyncio.sleep(1.0)
        warmup_s = time.monotonic() - started

        load_before = load_average()
        bot_cpu_before = cpu_seconds(bot.pid)
        worker_cpu_before = [cpu_seconds(pid) for pid in worker_pids]
        first_request = len(fake.requests)  # the warm-up job's requests are not part of the tally
        burst_start = time.monotonic()

        async def send(member: Member) -> None:
            await asyncio.sleep(max(0.0, burst_start + member.offset - time.monotonic()))
            member.sent_at = time.monotonic()
            message = await fake.send_user_message(fake.channel, member.user, f'.imagine {member.prompt}')
            member.message_id = message.id

        await asyncio.gather(*(send(m) for m in members))
        sent_span = max(m.sent_at or 0.0 for m in members) - burst_start
        tally = Tally(fake, members, first_request)
        drain = args.workers > 0 and not args.ack_only
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            tally.update()
            acked = sum(1 for m in members if m.ack_at is not None)
            if acked == len(members) and (not drain or tally.answered() == len(tally.by_job)):
                break
            if bot.returncode is not None:
                raise RuntimeError(f'the bot exited with {bot.returncode}')
            await asyncio.sleep(0.25)
        timed_out = time.monotonic() >= deadline
        drained_at = time.monotonic()
        await asyncio.sleep(args.settle)  # a duplicate post would show up here
        tally.update()
        bot_cpu = cpu_seconds(bot.pid)
        worker_cpu = [cpu_seconds(pid) for pid in worker_pids]
        load_after = load_average()
        cpu_pairs = zip(worker_cpu, worker_cpu_before, strict=True)
        burst_requests = fake.requests[first_request:]
        result = {
            'members': len(members),
            'wall_minus_monotonic': time.time() - time.monotonic(),  # to line the bot's log times up with ours
            'drained': drain,
            'sent_span_s': round(sent_span, 3),
            'warmup_s': round(warmup_s, 1),
            'timed_out': timed_out,
            'drain_s': round(drained_at - burst_start, 1),
            'load_before': load_before,
            'load_after': load_after,
            'bot_cpu_s': None if bot_cpu is None or bot_cpu_before is None else round(bot_cpu - bot_cpu_before, 1),
            'worker_cpu_s': [None if a is None or b is None else round(a - b, 1) for a, b in cpu_pairs],
            'refusals': tally.refusals[:5],
            'refused': len(tally.refusals),
            'stray_results': len(tally.stray_results),
            'limits': limits,
            'rest_requests': len(burst_requests),
            'progress_edits': sum(1 for r in burst_requests if r.method == 'PATCH' and not is_grid(r.json)),
        }
    finally:
        if bot.returncode is None:
            bot.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(bot.wait(), 90)
        except asyncio.TimeoutError:
            bot.kill()
            await bot.wait()
        for proc in workers:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in workers:
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        log_file.close()
        await fake.stop()
    result['bot_exit'] = bot.returncode
    result['guild_id'] = fake.guild.id
    monitor_path = data_dir / 'loop-monitor.json'
    result['loop'] = json.loads(monitor_path.read_text()) if monitor_path.exists() else None
    result['db'] = await database_checks(db, members, fake.guild.id)
    result['per_member'] = [
        {
            'member': m.user.username,
            'job': m.job_id,
            'ack_ms': None if m.ack_at is None or m.sent_at is None else (m.ack_at - m.sent_at) * 1000.0,
            'wait_s': None if m.result_at is None or m.ack_at is None else m.result_at - m.ack_at,
            'result_posts': m.result_posts,
            'sent_at': m.sent_at,
            'result_at': m.result_at,
        }
        for m in members
    ]
    if args.profile and profile_path.exists():
        result['profile'] = str(profile_path)
    result['log'] = str(log_path)
    return result


def summarise(result: dict[str, Any], args: argparse.Namespace) -> tuple[list[str], bool, bool]:
    """The printed report, whether delivery was exactly once, and whether both targets were met."""
    rows = result['per_member']
    n = len(rows)
    acks = [r['ack_ms'] for r in rows if r['ack_ms'] is not None]
    waits = [r['wait_s'] for r in rows if r['wait_s'] is not None]
    posts = [r['result_posts'] for r in rows]
    db = result['db']
    exactly_once = (not result['drained'] and not result['timed_out'] and result['refused'] == 0 and len(acks) == n) or (
        not result['timed_out']
        and result['refused'] == 0
        and len(acks) == n
        and all(p == 1 for p in posts)
        and result['stray_results'] == 0
        and db['jobs'] == n
        and db['succeeded'] == n
        and db['delivered'] == n
        and db['members_charged_once'] == n
    )
    # fairness: a job overtaken by later members' jobs (by when its result arrived)
    done = [r for r in rows if r['result_at'] is not None and r['sent_at'] is not None]
    overtaken = [sum(1 for o in done if o['sent_at'] > r['sent_at'] and o['result_at'] < r['result_at']) for r in done]
    loop = result['loop'] or {}
    p99 = percentile(acks, 0.99) if acks else float('inf')
    loop_max = loop.get('max_lag_ms', float('inf'))
    ack_ok, loop_ok = p99 < ACK_P99_TARGET_MS, loop_max < LOOP_BLOCK_TARGET_MS
    lines = [
        f'bot under load: {n} members, sent within {result["sent_span_s"]:.2f} s, {args.candidates} candidate(s) each, '
        f'tiny preset, {args.workers} worker(s) with --batch {args.batch}'
        f'{f" at nice {args.worker_nice}" if args.worker_nice else ""}, progress edits every {args.progress_seconds:g} s',
        f'admin limits raised bot-wide before the start (the defaults would refuse or slow this): {result["limits"]}',
        f'machine: {os.cpu_count()} CPU cores, load average before {result["load_before"]}, after {result["load_after"]}; '
        f'warm-up job {result["warmup_s"]} s; queue drained in {result["drain_s"]} s; '
        f'bot CPU {result["bot_cpu_s"]} s, worker CPU {result["worker_cpu_s"]} s; {result["rest_requests"]} REST requests '
        f'during the burst, {result["progress_edits"]} of them progress edits',
    ]
    if acks:
        lines.append(
            f'ack latency ms: p50 {percentile(acks, 0.5):.1f}  p99 {p99:.1f}  max {max(acks):.1f}  '
            f'(mean {statistics.fmean(acks):.1f}, {len(acks)}/{n} acked)'
        )
    if waits:
        median = statistics.median(waits)
        lines.append(
            f'wait ack→result s: min {min(waits):.1f}  median {median:.1f}  max {max(waits):.1f}  '
            f'max/median {max(waits) / median if median else float("inf"):.2f}; '
            f'most overtaken by later members: {max(overtaken) if overtaken else 0} '
            f'(workers × batch = {args.workers * args.batch})'
        )
    if not result['drained']:
        lines.append(
            f'exactly once: not measured (--ack-only or --workers 0: the queue was not drained); '
            f'{len(acks)}/{n} acknowledged, {result["refused"]} refused, {db["members_charged_once"]}/{n} charged once'
        )
    else:
        lines.append(
            f'exactly once: {sum(1 for p in posts if p == 1)}/{n} jobs answered once, '
            f'{sum(1 for p in posts if p > 1)} answered twice or more, {sum(1 for p in posts if p == 0)} unanswered, '
            f'{result["refused"]} refused, {result["stray_results"]} stray; '
            f'database: {db["succeeded"]}/{db["jobs"]} succeeded, {db["delivered"]} delivered, '
            f'{db["members_charged_once"]}/{n} members charged exactly once '
            f'({db["members_charged_twice_or_more"]} more than once)'
        )
    if loop:
        lines.append(
            f'bot event loop (ticker every {loop["interval_ms"]:.0f} ms, {loop["ticks"]} ticks): '
            f'max lag {loop["max_lag_ms"]:.1f} ms, p99 {loop["p99_lag_ms"]:.1f} ms, '
            f'{loop["ticks_over_50ms"]} ticks over 50 ms, {loop["ticks_over_100ms"]} over 100 ms'
        )
        for stall in loop.get('stalls', [])[:3]:
            where = ' | '.join(line.strip().splitlines()[0] for line in stall['stack'][-3:])
            lines.append(f'  stall at {stall["at_s"]:.1f} s in: {where}')
    else:
        lines.append('bot event loop: no monitor summary (did the bot exit cleanly?)')
    lines.append(f'target p99 ack < {ACK_P99_TARGET_MS:.0f} ms: {"PASS" if ack_ok else "FAIL"} ({p99:.1f} ms)')
    lines.append(
        f'target max loop block < {LOOP_BLOCK_TARGET_MS:.0f} ms: {"PASS" if loop_ok else "FAIL"} ({loop_max:.1f} ms)'
    )
    verdict = 'n/a (acknowledged once each)' if not result['drained'] else 'PASS' if exactly_once else 'FAIL'
    lines.append(f'exactly once, none missing, charged once: {verdict}')
    return lines, exactly_once, ack_ok and loop_ok


def print_profile(path: str, top: int = 25) -> None:
    stats = pstats.Stats(path)
    stats.sort_stats('tottime').print_stats(top)
    stats.sort_stats('cumulative').print_stats(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--members', type=int, default=MEMBERS)
    parser.add_argument('--window', type=float, default=WINDOW_SECONDS, help='seconds over which members send')
    parser.add_argument('--candidates', type=int, default=CANDIDATES)
    parser.add_argument('--workers', type=int, default=WORKERS, help='0: no worker at all (implies --ack-only)')
    parser.add_argument(
        '--worker-nice', type=int, default=0, help='run the worker(s) as separate processes at this niceness'
    )
    parser.add_argument('--ack-only', action='store_true', help='stop once every member is acknowledged (profiling)')
    parser.add_argument('--batch', type=int, default=WORKER_BATCH)
    parser.add_argument('--seed', type=int, default=SEED)
    parser.add_argument('--progress-seconds', type=float, default=PROGRESS_SECONDS, help="the bot's EDALLE_PROGRESS_SECONDS")
    parser.add_argument('--timeout', type=float, default=RESULT_TIMEOUT, help='seconds for the queue to drain')
    parser.add_argument('--settle', type=float, default=3.0, help='seconds to watch for duplicates after the last result')
    parser.add_argument(
        '--cache-dir', type=Path, default=DEFAULT_CACHE, help='tiny weights and JAX cache, kept between runs'
    )
    parser.add_argument(
        '--warmup', action=argparse.BooleanOptionalAction, default=True, help='one job end to end before the burst'
    )
    parser.add_argument('--profile', action='store_true', help='run the bot under cProfile and print its top functions')
    parser.add_argument('--json', type=Path, default=None, help='write the full result (per member too) here')
    parser.add_argument('--keep', action='store_true', help='keep the work dir (bot log, database) and print its path')
    parser.add_argument('--strict', action='store_true', help='exit 1 when a latency target is missed too')
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix='edalle-bot-load-'))
    result = asyncio.run(run_load(args, work))
    lines, exactly_once, targets_ok = summarise(result, args)
    print('\n'.join(lines))
    if args.profile and result.get('profile'):
        print_profile(result['profile'])
    if args.json is not None:
        args.json.write_text(json.dumps({**result, 'exactly_once': exactly_once, 'targets_ok': targets_ok}, indent=1))
    if args.keep:
        print(f'work dir: {work}')
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0 if exactly_once and (targets_ok or not args.strict) else 1


if __name__ == '__main__':
    sys.exit(main())
