"""importer/remote.py: URLs told from paths, shown without secrets, and their failures named."""

from __future__ import annotations

import pytest

from importer import remote
from importer.exceptions import ConfigError
from tests._s3 import S3


@pytest.mark.parametrize(("name", "kind"), [
    ("s3://b/k.csv", "s3"), ("GS://b/k", "gs"), ("abfs://c@a.dfs.core.windows.net/k", "abfs"),
    ("https://h/x.csv?sig=1", "https"), ("exports/a.csv", None), ("C:\\exports\\a.csv", None),
    ("./odd:name.csv", None), ("/data/s3:/x.csv", None),
])  # fmt: skip
def test_urls_are_told_from_local_paths(name: str, kind: str | None) -> None:
    assert remote.scheme(name) == kind
    assert remote.is_url(name) is (kind is not None)


def test_a_url_is_shown_without_query_secrets_or_credentials() -> None:
    presigned = ("https://bucket.s3.amazonaws.com/exports/a.csv?X-Amz-Signature=abc123"
                 "&X-Amz-Credential=AKIAXYZ#frag")
    assert remote.public(presigned) == "https://bucket.s3.amazonaws.com/exports/a.csv"
    assert remote.public("https://user:pw@host:8443/a.csv") == "https://host:8443/a.csv"
    assert remote.public("exports/a.csv?x") == "exports/a.csv?x"  # a local name is left alone


def test_an_unsupported_scheme_is_a_usage_error_naming_the_supported_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        remote.filesystem("ftp://host/a.csv?token=secret")
    assert caught.value.exit_code == 2
    assert "ftp://" in str(caught.value) and "s3://" in str(caught.value)
    assert "secret" not in str(caught.value)


def test_a_missing_extra_names_the_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real = builtins.__import__

    def no_gcsfs(name: str, *args: object, **kwargs: object) -> object:
        if name == "gcsfs":
            raise ImportError("No module named 'gcsfs'")
        return real(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_gcsfs)
    with pytest.raises(ConfigError, match=r"pip install 'instasent-import\[gcs\]'"):
        remote.filesystem("gs://bucket/a.csv")


def test_the_s3_filesystem_reads_the_loopback_server(s3: S3) -> None:
    s3.put("exports/a.csv", b"id\n1\n")
    fs, path = remote.filesystem(s3.url("exports/a.csv"))
    assert path == f"{s3.bucket}/exports/a.csv"
    assert fs.cat(path) == b"id\n1\n"


def test_storage_failures_are_named(s3: S3) -> None:
    fs, path = remote.filesystem(s3.url("exports/none.csv"))
    with pytest.raises(FileNotFoundError) as missing:
        fs.cat(path)
    assert remote.problem(missing.value)[0] == "no such object or bucket"
    assert remote.problem(PermissionError("Access Denied"))[0] == "access denied"
    assert remote.problem(OSError("ExpiredToken: The provided token has expired"))[0] == (
        "the credentials have expired")


def test_join_keeps_a_url_a_url() -> None:
    assert remote.join("s3://b/state/", "journal.sqlite") == "s3://b/state/journal.sqlite"
    assert remote.join("state", "journal.sqlite").endswith("state/journal.sqlite")
