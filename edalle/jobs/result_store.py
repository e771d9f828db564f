"""Where result pictures live when workers and the bot do not share a disk.

Workers write a job's files under their own data dir (`images/<job>/<attempt>/…`, see
`edalle.worker.results`) and the job row keeps paths relative to the data dir. With one host (the
default) that disk *is* the result store: `LocalResultStore` does nothing. With workers on other hosts,
a worker `publish`es its files to a shared store before the fenced `complete`, and any process that
needs them (the bot posting a result or a preview, a worker expanding another worker's candidate)
`materialize`s them into its own data dir first; after that, reading is reading a local file, so the
code that reads pictures does not change. Keys are the same relative paths, so a file's name is the
same everywhere.

Three stores, chosen by one setting (`EDALLE_RESULT_STORE`):

- `local` (default): the data dir itself;
- `database`: a `job_files` table (bytea, EXTERNAL storage) in the PostgreSQL job database, nothing more
  to run; fine for ~100 KB PNGs at Discord-bot rates;
- `s3`: any S3-compatible object store (AWS, R2, MinIO, Garage…), signed with AWS Signature V4 over
  plain aiohttp (no SDK dependency). Settings: `EDALLE_S3_ENDPOINT`, `EDALLE_S3_BUCKET`,
  `EDALLE_S3_REGION` (default us-east-1), `EDALLE_S3_PREFIX`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import logging
import os
import urllib.parse
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from edalle.outputs import write_atomic

log = logging.getLogger(__name__)


class ResultStoreError(RuntimeError):
    """The result store refused or could not be reached."""


def _checked(path: str) -> str:
    """A relative POSIX path inside the data dir; anything else (absolute, `..`) is refused."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or '..' in pure.parts or not pure.parts:
        raise ValueError(f'result paths must be relative to the data dir, got {path!r}')
    return pure.as_posix()


class ResultStore(Protocol):
    """Files of finished jobs, by (job id, path relative to the data dir)."""

    is_local: bool  # True: every process already sees the files in its data dir

    async def put(self, job_id: int, path: str, data: bytes) -> None: ...
    async def get(self, job_id: int, path: str) -> bytes: ...  # FileNotFoundError when absent
    async def list(self, job_id: int) -> list[str]: ...
    async def delete_job(self, job_id: int, prefix: str = '') -> int: ...
    async def close(self) -> None: ...


async def publish(results: ResultStore, data_dir: Path, job_id: int, paths: Iterable[Path | str]) -> list[str]:
    """Worker side: upload these files (absolute, or relative to `data_dir`); returns their keys."""
    if results.is_local:
        return []
    keys = []
    for path in paths:
        path = Path(path)
        absolute = path if path.is_absolute() else data_dir / path
        key = _checked(absolute.relative_to(data_dir).as_posix())
        await results.put(job_id, key, await asyncio.to_thread(absolute.read_bytes))
        keys.append(key)
    return keys


async def publish_folder(results: ResultStore, data_dir: Path, job_id: int, folder: Path) -> list[str]:
    """Worker side: upload every file under `folder` (one attempt's output)."""
    if results.is_local or not folder.is_dir():
        return []
    files = sorted(p for p in folder.rglob('*') if p.is_file() and not p.name.startswith('.'))
    return await publish(results, data_dir, job_id, files)


async def materialize(
    results: ResultStore, data_dir: Path, job_id: int, path: str | None = None, *, refresh: bool = False
) -> int:
    """Reader side: make the job's files (or just `path`) present under `data_dir`; returns how many were
    fetched. Files already there are kept (a result never changes once published) unless `refresh`
    (a preview, which the worker rewrites under one name)."""
    if results.is_local:
        return 0
    keys = [_checked(path)] if path is not None else await results.list(job_id)
    fetched = 0
    for key in keys:
        target = data_dir / key
        if target.is_file() and not refresh:
            continue
        try:
            data = await results.get(job_id, key)
        except FileNotFoundError:
            if path is not None:
                raise
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(write_atomic, target, data)
        fetched += 1
    return fetched


class LocalResultStore:
    """The data dir is the store: every process shares one disk (the default, one host)."""

    is_local = True

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)

    async def put(self, job_id: int, path: str, data: bytes) -> None:
        target = self.data_dir / _checked(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(write_atomic, target, data)

    async def get(self, job_id: int, path: str) -> bytes:
        return await asyncio.to_thread((self.data_dir / _checked(path)).read_bytes)

    async def list(self, job_id: int) -> list[str]:
        root = self.data_dir / 'images' / str(job_id)
        if not root.is_dir():
            return []
        return sorted(p.relative_to(self.data_dir).as_posix() for p in root.rglob('*') if p.is_file())

    async def delete_job(self, job_id: int, prefix: str = '') -> int:
        paths = [p for p in await self.list(job_id) if p.startswith(prefix)]
        for path in paths:
            (self.data_dir / path).unlink(missing_ok=True)
        return len(paths)

    async def close(self) -> None:
        pass


class PostgresResultStore:
    """Files as bytea rows of `job_files` in the PostgreSQL job database (created by its migrations)."""

    is_local = False

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str) -> PostgresResultStore:
        import asyncpg

        from edalle.jobs.postgres import PostgresJobStore

        await (await PostgresJobStore.open(url, pool_size=1)).close()  # the table comes with the migrations
        return cls(await asyncpg.create_pool(url, min_size=1, max_size=2, command_timeout=60))

    async def put(self, job_id: int, path: str, data: bytes) -> None:
        query = """
            INSERT INTO job_files (job_id, path, data, created_at) VALUES ($1, $2, $3, extract(epoch FROM now()))
            ON CONFLICT (job_id, path) DO UPDATE SET data = excluded.data, created_at = excluded.created_at
        """
        async with self._pool.acquire() as conn:
            await conn.execute(query, job_id, _checked(path), data)

    async def get(self, job_id: int, path: str) -> bytes:
        async with self._pool.acquire() as conn:
            data = await conn.fetchval('SELECT data FROM job_files WHERE job_id = $1 AND path = $2', job_id, _checked(path))
        if data is None:
            raise FileNotFoundError(f'job {job_id}: {path} is not in the result store')
        return bytes(data)

    async def list(self, job_id: int) -> list[str]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch('SELECT path FROM job_files WHERE job_id = $1 ORDER BY path', job_id)
        return [row['path'] for row in rows]

    async def delete_job(self, job_id: int, prefix: str = '') -> int:
        query = 'DELETE FROM job_files WHERE job_id = $1 AND starts_with(path, $2)'
        async with self._pool.acquire() as conn:
            status = await conn.execute(query, job_id, prefix)
        return int(status.rsplit(' ', 1)[-1])

    async def close(self) -> None:
        await self._pool.close()


# ---- S3-compatible -----------------------------------------------------------------------------------------

EMPTY_SHA256 = hashlib.sha256(b'').hexdigest()


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sigv4_headers(
    method: str,
    url: str,
    *,
    region: str,
    access_key: str,
    secret_key: str,
    payload_sha256: str = EMPTY_SHA256,
    headers: Mapping[str, str] | None = None,
    now: dt.datetime | None = None,
    service: str = 's3',
) -> dict[str, str]:
    """AWS Signature Version 4 for one request (header form): the headers to send, Authorization included.

    Written out (about 30 lines, per the AWS "Signature Version 4 signing process" page) rather than
    pulling in botocore; `test_result_store.py` checks it against the published S3 GET example.
    """
    parts = urllib.parse.urlsplit(url)
    now = now or dt.datetime.now(dt.timezone.utc)
    amz_date, day = now.strftime('%Y%m%dT%H%M%SZ'), now.strftime('%Y%m%d')
    signed = {k.lower(): ' '.join(str(v).split()) for k, v in (headers or {}).items()}
    signed.update({'host': parts.netloc, 'x-amz-content-sha256': payload_sha256, 'x-amz-date': amz_date})
    names = sorted(signed)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    canonical_query = '&'.join(
        f'{urllib.parse.quote(k, safe="-_.~")}={urllib.parse.quote(v, safe="-_.~")}' for k, v in sorted(query)
    )
    canonical = '\n'.join(
        [
            method.upper(),
            urllib.parse.quote(parts.path or '/', safe='/-_.~'),
            canonical_query,
            ''.join(f'{name}:{signed[name]}\n' for name in names),
            ';'.join(names),
            payload_sha256,
        ]
    )
    scope = f'{day}/{region}/{service}/aws4_request'
    to_sign = '\n'.join(['AWS4-HMAC-SHA256', amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f'AWS4{secret_key}'.encode(), day), region), service), 'aws4_request')
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    authorization = (
        f'AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={";".join(names)}, Signature={signature}'
    )
    return {**{k: v for k, v in signed.items() if k != 'host'}, 'Authorization': authorization}


class S3ResultStore:
    """Objects `<prefix>jobs/<job id>/<path>` in one bucket of an S3-compatible store (path-style URLs)."""

    is_local = False

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        *,
        access_key: str,
        secret_key: str,
        region: str = 'us-east-1',
        prefix: str = '',
        timeout: float = 60.0,
    ) -> None:
        self.endpoint = endpoint.rstrip('/')
        self.bucket = bucket
        self.region = region
        self.prefix = prefix
        self._access_key = access_key
        self._secret_key = secret_key
        self._timeout = timeout
        self._session: Any = None

    def _key(self, job_id: int, path: str = '') -> str:
        return f'{self.prefix}jobs/{job_id}/{_checked(path) if path else ""}'

    async def _request(self, method: str, key: str = '', *, data: bytes = b'', query: str = '') -> tuple[int, bytes]:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        url = f'{self.endpoint}/{self.bucket}/{urllib.parse.quote(key, safe="/-_.~")}' + (f'?{query}' if query else '')
        headers = sigv4_headers(
            method,
            url,
            region=self.region,
            access_key=self._access_key,
            secret_key=self._secret_key,
            payload_sha256=hashlib.sha256(data).hexdigest(),
        )
        try:
            async with self._session.request(method, url, data=data or None, headers=headers) as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise ResultStoreError(f'{method} {url}: {exc.__class__.__name__}: {exc}') from exc

    @staticmethod
    def _raise(status: int, body: bytes, what: str) -> None:
        raise ResultStoreError(f'the object store answered {status} to {what}: {body[:200]!r}')

    async def put(self, job_id: int, path: str, data: bytes) -> None:
        status, body = await self._request('PUT', self._key(job_id, path), data=data)
        if status // 100 != 2:
            self._raise(status, body, f'PUT {path}')

    async def get(self, job_id: int, path: str) -> bytes:
        status, body = await self._request('GET', self._key(job_id, path))
        if status == 404:
            raise FileNotFoundError(f'job {job_id}: {path} is not in the result store')
        if status // 100 != 2:
            self._raise(status, body, f'GET {path}')
        return body

    async def list(self, job_id: int) -> list[str]:
        """ListObjectsV2 under the job's prefix, following continuation tokens."""
        base = self._key(job_id)
        paths, token = [], None
        while True:
            params = {'list-type': '2', 'prefix': base, **({'continuation-token': token} if token else {})}
            status, body = await self._request('GET', query=urllib.parse.urlencode(sorted(params.items())))
            if status // 100 != 2:
                self._raise(status, body, f'LIST {base}')
            root = ElementTree.fromstring(body)
            ns = root.tag.split('}')[0] + '}' if root.tag.startswith('{') else ''
            paths += [el.text[len(base) :] for el in root.iter(f'{ns}Key') if el.text and el.text.startswith(base)]
            token = root.findtext(f'{ns}NextContinuationToken')
            if not token or root.findtext(f'{ns}IsTruncated') != 'true':
                return sorted(paths)

    async def delete_job(self, job_id: int, prefix: str = '') -> int:
        paths = [p for p in await self.list(job_id) if p.startswith(prefix)]
        for path in paths:
            status, body = await self._request('DELETE', self._key(job_id, path))
            if status // 100 != 2 and status != 404:
                self._raise(status, body, f'DELETE {path}')
        return len(paths)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


RESULT_STORES = ('local', 'database', 's3')


async def open_result_store(
    kind: str | None, *, data_dir: Path, database_url: str | None = None, env: Mapping[str, str] | None = None
) -> ResultStore:
    """The result store a setting names (`EDALLE_RESULT_STORE`): local (default), database or s3."""
    env = os.environ if env is None else env
    kind = (kind or 'local').strip().lower()
    if kind == 'local':
        return LocalResultStore(data_dir)
    if kind == 'database':
        if not database_url or not database_url.startswith(('postgresql://', 'postgres://')):
            raise ValueError('EDALLE_RESULT_STORE=database needs EDALLE_DATABASE_URL=postgresql://… (SQLite is one host)')
        return await PostgresResultStore.open(database_url)
    if kind == 's3':
        missing = [
            name
            for name in ('EDALLE_S3_ENDPOINT', 'EDALLE_S3_BUCKET', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY')
            if not env.get(name)
        ]
        if missing:
            raise ValueError(f'EDALLE_RESULT_STORE=s3 needs {", ".join(missing)}')
        return S3ResultStore(
            env['EDALLE_S3_ENDPOINT'],
            env['EDALLE_S3_BUCKET'],
            access_key=env['AWS_ACCESS_KEY_ID'],
            secret_key=env['AWS_SECRET_ACCESS_KEY'],
            region=env.get('EDALLE_S3_REGION') or 'us-east-1',
            prefix=env.get('EDALLE_S3_PREFIX', ''),
        )
    raise ValueError(f'EDALLE_RESULT_STORE must be one of {", ".join(RESULT_STORES)} (got {kind!r})')
