"""Result stores: files published by a worker on one host are materialized on another, through the database
(a real PostgreSQL) or an S3-compatible store (a small loopback server below that checks every request's
AWS Signature V4, as S3 does); the local store does nothing, since every process shares the disk.

The signer is checked against AWS's published examples (S3 "GET Object" and "GET Bucket (List Objects)"
in the Signature Version 4 header-auth docs), so the loopback server is not checking it against itself only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from aiohttp import web
from pg_server import pg_url  # noqa: F401  (fixture)

from edalle.jobs.result_store import (
    LocalResultStore,
    PostgresResultStore,
    ResultStoreError,
    S3ResultStore,
    materialize,
    open_result_store,
    publish,
    publish_folder,
    sigv4_headers,
)

AWS_EXAMPLE = dict(
    region='us-east-1',
    access_key='AKIAIOSFODNN7EXAMPLE',
    secret_key='wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
    now=dt.datetime(2013, 5, 24, tzinfo=dt.timezone.utc),
)


@pytest.mark.parametrize(
    ('url', 'headers', 'signature'),
    [
        (
            'https://examplebucket.s3.amazonaws.com/test.txt',
            {'Range': 'bytes=0-9'},
            'f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41',
        ),
        (
            'https://examplebucket.s3.amazonaws.com/?max-keys=2&prefix=J',
            {},
            '34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7',
        ),
    ],
)
def test_sigv4_matches_the_published_aws_examples(url, headers, signature):
    signed = sigv4_headers('GET', url, headers=headers, **AWS_EXAMPLE)
    assert signed['Authorization'].endswith(f'Signature={signature}')


def worker_output(root: Path, job_id: int, attempt: int = 1) -> Path:
    """What a worker leaves in its data dir for one attempt of an imagine job."""
    folder = root / 'images' / str(job_id) / str(attempt)
    folder.mkdir(parents=True)
    for i in range(3):
        (folder / f'candidate-{i + 1}.png').write_bytes(b'\x89PNG' + bytes([i]) * 1000)
    (folder / 'grid.png').write_bytes(b'\x89PNG grid')
    (folder / 'manifest.json').write_text('{}')
    return folder


async def round_trip(results, tmp_path: Path) -> None:
    """Worker host publishes, bot host materializes: the same bytes under the same relative paths."""
    worker_dir, bot_dir = tmp_path / 'worker', tmp_path / 'bot'
    folder = worker_output(worker_dir, 7)
    keys = await publish_folder(results, worker_dir, 7, folder)
    assert keys == sorted(p.relative_to(worker_dir).as_posix() for p in folder.iterdir())
    assert await materialize(results, bot_dir, 7) == 5
    for key in keys:
        assert (bot_dir / key).read_bytes() == (worker_dir / key).read_bytes()
    assert await materialize(results, bot_dir, 7) == 0  # already there

    # A preview is rewritten under one name: `refresh` fetches the new one.
    preview = folder / 'preview.png'
    for content in (b'first', b'second'):
        preview.write_bytes(content)
        await publish(results, worker_dir, 7, ['images/7/1/preview.png'])
        await materialize(results, bot_dir, 7, 'images/7/1/preview.png', refresh=True)
        assert (bot_dir / 'images/7/1/preview.png').read_bytes() == content

    with pytest.raises(FileNotFoundError):
        await materialize(results, bot_dir, 8, 'images/8/1/grid.png')
    with pytest.raises(ValueError):
        await results.get(7, '../../etc/passwd')

    # A fenced-off attempt's files go; the successful attempt's stay.
    worker_output(worker_dir, 7, attempt=2)
    await publish_folder(results, worker_dir, 7, worker_dir / 'images/7/2')
    assert await results.delete_job(7, prefix='images/7/2/') == 5
    assert all(key.startswith('images/7/1/') for key in await results.list(7))
    assert await results.delete_job(7) == 6 and await results.list(7) == []


def test_local_store_is_the_shared_data_dir(tmp_path):
    async def main():
        results = LocalResultStore(tmp_path)
        folder = worker_output(tmp_path, 3)
        assert await publish_folder(results, tmp_path, 3, folder) == []  # nothing to upload
        assert await materialize(results, tmp_path / 'elsewhere', 3) == 0
        assert await results.get(3, 'images/3/1/grid.png') == b'\x89PNG grid'
        assert len(await results.list(3)) == 5

    asyncio.run(main())


def test_database_store_carries_files_between_hosts(pg_url, tmp_path):  # noqa: F811
    async def main():
        results = await open_result_store('database', data_dir=tmp_path, database_url=pg_url)
        assert isinstance(results, PostgresResultStore)
        try:
            await round_trip(results, tmp_path)
        finally:
            await results.close()

    asyncio.run(main())


def test_database_store_needs_a_postgres_job_store(tmp_path):
    with pytest.raises(ValueError, match='EDALLE_DATABASE_URL'):
        asyncio.run(open_result_store('database', data_dir=tmp_path, database_url=None))


# ---- a small S3-compatible server on loopback ---------------------------------------------------------------


class TinyS3:
    """PUT/GET/DELETE objects and ListObjectsV2 (two keys per page, to exercise continuation) in one bucket;
    every request must carry a valid SigV4 Authorization for the known key pair, or it gets 403."""

    def __init__(self, access_key: str, secret_key: str, region: str = 'us-east-1') -> None:
        self.access_key, self.secret_key, self.region = access_key, secret_key, region
        self.objects: dict[str, bytes] = {}
        self.refused = 0

    def _authorised(self, request: web.Request, body: bytes) -> bool:
        header = request.headers.get('Authorization', '')
        amz_date = request.headers.get('x-amz-date', '')
        if hashlib.sha256(body).hexdigest() != request.headers.get('x-amz-content-sha256'):
            return False
        try:
            now = dt.datetime.strptime(amz_date, '%Y%m%dT%H%M%SZ').replace(tzinfo=dt.timezone.utc)
        except ValueError:
            return False
        expected = sigv4_headers(
            request.method,
            str(request.url),
            region=self.region,
            access_key=self.access_key,
            secret_key=self.secret_key,
            payload_sha256=request.headers['x-amz-content-sha256'],
            now=now,
        )['Authorization']
        return header == expected

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not self._authorised(request, body):
            self.refused += 1
            return web.Response(status=403, text='<Error><Code>SignatureDoesNotMatch</Code></Error>')
        bucket, _, key = request.path.lstrip('/').partition('/')
        if bucket != 'results':
            return web.Response(status=404, text='<Error><Code>NoSuchBucket</Code></Error>')
        if request.method == 'GET' and not key:
            return self._list(request)
        if request.method == 'PUT':
            self.objects[key] = body
            return web.Response(status=200)
        if request.method == 'GET':
            if key not in self.objects:
                return web.Response(status=404, text='<Error><Code>NoSuchKey</Code></Error>')
            return web.Response(body=self.objects[key])
        if request.method == 'DELETE':
            self.objects.pop(key, None)
            return web.Response(status=204)
        return web.Response(status=405)

    def _list(self, request: web.Request) -> web.Response:
        prefix = request.query.get('prefix', '')
        keys = sorted(k for k in self.objects if k.startswith(prefix))
        start = int(request.query.get('continuation-token', '0'))
        page, more = keys[start : start + 2], start + 2 < len(keys)
        xml = ''.join(f'<Contents><Key>{escape(k)}</Key></Contents>' for k in page)
        token = f'<NextContinuationToken>{start + 2}</NextContinuationToken>' if more else ''
        text = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f'<IsTruncated>{"true" if more else "false"}</IsTruncated>{xml}{token}</ListBucketResult>'
        )
        return web.Response(text=text, content_type='application/xml')


@asynccontextmanager
async def tiny_s3(s3: TinyS3) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route('*', '/{tail:.*}', s3.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, '127.0.0.1', 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f'http://127.0.0.1:{port}'
    finally:
        await runner.cleanup()


def test_s3_store_carries_files_between_hosts_with_signed_requests(tmp_path):
    async def main():
        s3 = TinyS3('AKIDEXAMPLE', 'secret/with+chars')
        async with tiny_s3(s3) as endpoint:
            env = {
                'EDALLE_S3_ENDPOINT': endpoint,
                'EDALLE_S3_BUCKET': 'results',
                'AWS_ACCESS_KEY_ID': 'AKIDEXAMPLE',
                'AWS_SECRET_ACCESS_KEY': 'secret/with+chars',
                'EDALLE_S3_PREFIX': 'edalle/',
            }
            results = await open_result_store('s3', data_dir=tmp_path, env=env)
            assert isinstance(results, S3ResultStore)
            try:
                await round_trip(results, tmp_path)
                assert s3.refused == 0
            finally:
                await results.close()

            wrong = S3ResultStore(endpoint, 'results', access_key='AKIDEXAMPLE', secret_key='not-it')
            try:
                with pytest.raises(ResultStoreError, match='403'):
                    await wrong.put(1, 'images/1/1/grid.png', b'x')
            finally:
                await wrong.close()
            assert s3.refused == 1

    asyncio.run(main())


def test_s3_store_names_missing_settings(tmp_path):
    with pytest.raises(ValueError, match='EDALLE_S3_BUCKET'):
        asyncio.run(open_result_store('s3', data_dir=tmp_path, env={'EDALLE_S3_ENDPOINT': 'http://x'}))
