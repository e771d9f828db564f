"""A throwaway PostgreSQL server for the tests and benchmarks: initdb in a temp dir, start on a free port.

The PostgreSQL binaries refuse to run as root, so under root every command runs as the `postgres` user
(`runuser -u postgres --`) in directories it owns. One server per test process, started on first use
(about 2 s) and stopped at exit; each test gets a fresh database of its own (`CREATE DATABASE`), so
tests never see each other's rows. The fixtures skip, with the reason, only when no PostgreSQL is
installed (`apt-get install -y postgresql`); a server that is installed but fails to start is an error.

    from pg_server import pg_url  # noqa: F401   (a fixture: a postgresql:// URL of an empty database)
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN_GLOBS = ('/usr/lib/postgresql/*/bin', '/usr/local/pgsql/bin')
# Durability off: a test server that loses its data on a power cut is fine, and commits get ~10x cheaper.
FAST_SETTINGS = ('fsync=off', 'synchronous_commit=off', 'full_page_writes=off')


def find_bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin dir (Debian keeps them out of PATH), or None."""
    for pattern in BIN_GLOBS:
        found = sorted(
            glob.glob(pattern), key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parent.name.split('.')]
        )
        for path in reversed(found):
            if (Path(path) / 'pg_ctl').is_file():
                return Path(path)
    on_path = shutil.which('pg_ctl')
    return Path(on_path).parent if on_path else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class PgServer:
    """One running server. `url(db)` is a DSN for database `db`; `create_database()` makes a new empty one."""

    def __init__(self, bin_dir: Path, *, fast: bool = True, port: int | None = None) -> None:
        self.bin_dir = bin_dir
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix='edalle-pg-'))
        self.data = self.root / 'data'
        self.sockets = self.root / 'sock'
        self.fast = fast
        self._as_postgres = os.geteuid() == 0
        self._names = itertools.count(1)
        self._lock = threading.Lock()
        self.started = False

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        prefix = ['runuser', '-u', 'postgres', '--'] if self._as_postgres else []
        done = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f'{Path(argv[0]).name} failed ({done.returncode}): {done.stdout}\n{done.stderr}')
        return done

    def start(self) -> PgServer:
        self.sockets.mkdir(parents=True)
        if self._as_postgres:
            shutil.chown(self.root, 'postgres', 'postgres')
            shutil.chown(self.sockets, 'postgres', 'postgres')
        self._run(str(self.bin_dir / 'initdb'), '-D', str(self.data), '-A', 'trust', '-U', 'postgres', '-E', 'UTF8')
        options = [f'-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets}', '-c max_connections=200']
        if self.fast:
            options += [f'-c {setting}' for setting in FAST_SETTINGS]
        log = self.root / 'server.log'
        self._run(str(self.bin_dir / 'pg_ctl'), '-D', str(self.data), '-l', str(log), '-o', ' '.join(options), '-w', 'start')
        self.started = True
        self._watch_parent()
        return self

    def _watch_parent(self) -> None:
        """A tiny watchdog process: when this process dies without running `stop` (SIGKILL, a CI timeout),
        it stops the server and removes its files, so no orphan postgres outlives the tests."""
        prefix = ['runuser', '-u', 'postgres', '--'] if self._as_postgres else []
        stop = [*prefix, str(self.bin_dir / 'pg_ctl'), '-D', str(self.data), '-m', 'immediate', '-w', 'stop']
        code = (
            'import os, shutil, subprocess, sys, time\n'
            'parent, root, stop = int(sys.argv[1]), sys.argv[2], sys.argv[3:]\n'
            'while os.getppid() == parent and os.path.isdir(root):\n'
            '    time.sleep(1)\n'
            'if os.path.isdir(root):\n'
            '    subprocess.run(stop, capture_output=True)\n'
            '    shutil.rmtree(root, ignore_errors=True)\n'
        )
        argv = [sys.executable, '-c', code, str(os.getpid()), str(self.root), *stop]
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.started:
            self.started = False
            try:
                self._run(str(self.bin_dir / 'pg_ctl'), '-D', str(self.data), '-m', 'immediate', '-w', 'stop')
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = 'postgres') -> str:
        return f'postgresql://postgres@127.0.0.1:{self.port}/{database}'

    def psql(self, sql: str, database: str = 'postgres') -> str:
        argv = [
            str(self.bin_dir / 'psql'),
            '-X',
            '-q',
            '-A',
            '-t',
            '-v',
            'ON_ERROR_STOP=1',
            '-d',
            self.url(database),
            '-c',
            sql,
        ]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout

    def create_database(self, prefix: str = 'test') -> str:
        """A new empty database; returns its URL."""
        with self._lock:
            name = f'{prefix}_{os.getpid()}_{next(self._names)}'
        self.psql(f'CREATE DATABASE {name}')
        return self.url(name)


_server: PgServer | None = None
_server_lock = threading.Lock()


def shared_server() -> PgServer:
    """The process's one server, started on first use and stopped at exit. Skips the test without binaries."""
    global _server
    with _server_lock:
        if _server is None:
            bin_dir = find_bin_dir()
            if bin_dir is None:
                pytest.skip('PostgreSQL is not installed (no pg_ctl in /usr/lib/postgresql/*/bin or on PATH)')
            server = PgServer(bin_dir)
            atexit.register(server.stop)
            _server = server.start()
        return _server


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A postgresql:// URL of a fresh, empty database on the shared test server."""
    yield shared_server().create_database()


@pytest.fixture(scope='session')
def pg_server() -> PgServer:
    return shared_server()
