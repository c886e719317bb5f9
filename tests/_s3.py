"""A real S3 implementation on 127.0.0.1 for the object-storage tests: moto's server mode.

Use the ``s3`` fixture (session-wide server, a fresh bucket per test)::

    def test_x(s3):
        s3.put("exports/a.csv", b"id\\n1\\n")        # object bytes
        s3.url("exports/*.csv")                      # s3://<bucket>/exports/*.csv
        s3.get("state/journal.sqlite")               # bytes, or KeyError
        s3.env                                       # os.environ for a child process

The fixture points this process's environment at the server (``AWS_ENDPOINT_URL`` and dummy
credentials, through monkeypatch), so in-process runs and child processes started with
``s3.env`` reach it the same way a user's job reaches AWS: by botocore's standard chain.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

ENV = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_SESSION_TOKEN": "testing-session",
    "AWS_DEFAULT_REGION": "us-east-1",
}

_buckets = itertools.count(1)


@dataclass
class S3:
    endpoint: str
    bucket: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def fs(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True,
                                 client_kwargs={"endpoint_url": self.endpoint})

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    def put(self, key: str, data: bytes) -> str:
        self.fs.pipe(f"{self.bucket}/{key}", data)
        return self.url(key)

    def get(self, key: str) -> bytes:
        fs = self.fs
        path = f"{self.bucket}/{key}"
        if not fs.exists(path):
            raise KeyError(key)
        return bytes(fs.cat(path))

    def keys(self, prefix: str = "") -> list[str]:
        fs = self.fs
        found = fs.find(f"{self.bucket}/{prefix}")
        return sorted(p.split("/", 1)[1] for p in found)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    pytest.importorskip("s3fs", reason="the s3 extra is part of the dev install")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3:
    env = {**ENV, "AWS_ENDPOINT_URL": s3_endpoint}
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    store = S3(endpoint=s3_endpoint, bucket=f"bucket-{next(_buckets)}-{os.getpid()}",
               env={**os.environ, **env})
    store.fs.mkdir(store.bucket)
    from fsspec import AbstractFileSystem

    AbstractFileSystem.clear_instance_cache()  # one made under another test's environment
    return store
