"""Object storage and web URLs: which names are URLs, the filesystem behind each, how to show
them and what their failures mean.

Everything goes through fsspec and the cloud's own fsspec implementation (s3fs, gcsfs, adlfs;
aiohttp for ``https://``), installed as optional extras: ``pip install
'instasent-import[s3]'`` (or ``[gcs]``, ``[azure]``, ``[http]``). Credentials come from each
cloud's standard chain (environment, profile, instance or workload identity): the importer
has no option for them and never prints them.

A URL is shown through :func:`public`, which drops a query string (a presigned URL's
signature), a fragment and any ``user:password@``, in messages, reports and rejects sidecars.
"""

from __future__ import annotations

import os
import re
import secrets
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from importer.exceptions import ConfigError, StorageError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

#: scheme -> (extra that provides it, module that must import)
SCHEMES: dict[str, tuple[str, str]] = {
    "s3": ("s3", "s3fs"), "s3a": ("s3", "s3fs"),
    "gs": ("gcs", "gcsfs"), "gcs": ("gcs", "gcsfs"),
    "az": ("azure", "adlfs"), "abfs": ("azure", "adlfs"), "abfss": ("azure", "adlfs"),
    "http": ("http", "aiohttp"), "https": ("http", "aiohttp"),
}  # fmt: skip

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def scheme(name: str) -> str | None:
    """``"s3"`` for ``s3://b/k``; None for a local path (``C:\\x`` and ``./a:b`` included)."""
    match = _SCHEME.match(str(name))
    return match.group(1).lower() if match else None


def is_url(name: object) -> bool:
    """True for any ``scheme://`` name (supported or not: :func:`filesystem` says which)."""
    return isinstance(name, str) and scheme(name) is not None


def is_web(name: str) -> bool:
    return scheme(name) in ("http", "https")


def public(url: str) -> str:
    """The URL as it may be shown or stored: no query string, fragment or credentials."""
    if not is_url(url):
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def filesystem(url: str) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem for ``url`` and the path inside it.

    Raises :class:`ConfigError` (exit 2, before anything is sent) for a scheme the importer
    does not support, or one whose extra is not installed, naming the ``pip install`` to run.
    """
    kind = scheme(url)
    if kind is None:
        raise ValueError(f"not a URL: {url!r}")
    if kind not in SCHEMES:
        known = ", ".join(sorted({f"{s}://" for s in SCHEMES}))
        raise ConfigError(f"{public(url)}: unsupported URL scheme {kind}:// — use a local "
                          f"path or one of {known}")
    extra, module = SCHEMES[kind]
    try:
        __import__(module)
        import fsspec.core
    except ImportError:
        raise ConfigError(
            f"{public(url)}: {kind}:// needs the optional '{extra}' support, not installed "
            f"here — pip install 'instasent-import[{extra}]'") from None
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def join(base: str, name: str) -> str:
    """``base/name`` for a local directory or a URL prefix."""
    if is_url(base):
        return base.rstrip("/") + "/" + name
    import os

    return os.path.join(base, name)


def problem(exc: BaseException) -> tuple[str, str]:
    """(what went wrong, what to do) for a failure of an object-store or web request.

    s3fs, gcsfs and adlfs translate their services' errors to ``OSError`` subclasses; the
    rest (an expired token, a signature error) carry the service's code in their text.
    """
    text = str(exc)
    lowered = text.lower()
    if isinstance(exc, FileNotFoundError) or "nosuchbucket" in lowered or "404" in lowered:
        return ("no such object or bucket",
                "check the URL (bucket, prefix and name) and the account it is read with")
    if any(code in lowered for code in ("expiredtoken", "token has expired", "expired")):
        return ("the credentials have expired",
                "renew them (e.g. aws sso login, or the role's session) and run again")
    if isinstance(exc, PermissionError) or any(
        code in lowered for code in ("accessdenied", "access denied", "forbidden", "403",
                                     "invalidaccesskeyid", "signaturedoesnotmatch")):
        return ("access denied",
                "check the credentials in the environment or profile and that they may read "
                "and write this bucket and prefix")
    if isinstance(exc, ConnectionError | TimeoutError):
        return (f"the storage service did not answer ({type(exc).__name__})",
                "check the network, the endpoint and any proxy, then run again")
    detail = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return (detail[:300], "check the URL and the credentials, then run again")


def probe(url: str, what: str, *, prefix: bool = False) -> None:
    """Raise :class:`OutputPathError` (exit 2, nothing sent) unless an object can be created
    and deleted under ``url`` (a ``prefix``: the state directory) or beside it (the rejects
    file, the report). Like :func:`importer.storage.check_dir` locally: a missing bucket, a
    denied write or expired credentials are found before the first request, not halfway."""
    from importer.exceptions import OutputPathError

    fs, path = filesystem(url)
    folder = path.rstrip("/") if prefix else path.rsplit("/", 1)[0]
    name = f"{folder}/.instasent-import-probe-{secrets.token_hex(6)}"
    try:
        fs.pipe_file(name, b"")
        fs.rm_file(name)
    except Exception as exc:  # each backend raises its own types (botocore, aiohttp, OSError)
        what_failed, remedy = problem(exc)
        raise OutputPathError(public(url), what, f"{what_failed} — {remedy}") from None


def put_file(local: str | os.PathLike[str], url: str) -> None:
    """Upload a local file as one object (a PUT, or a multipart upload completed at once:
    readers see the old object or the new one, never half of it)."""
    fs, path = filesystem(url)
    fs.put_file(os.fspath(local), path)


def put_bytes(url: str, data: bytes) -> None:
    fs, path = filesystem(url)
    fs.pipe_file(path, data)


def get_file(url: str, local: str | os.PathLike[str]) -> bool:
    """Download ``url`` to ``local`` (created mode 0600); False if there is no such object."""
    fs, path = filesystem(url)
    os.close(os.open(local, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))  # private first
    try:
        fs.get_file(path, os.fspath(local))  # streamed: a rejects file may be large
    except FileNotFoundError:
        os.unlink(local)
        return False
    return True


def storage_failure(url: str, exc: BaseException, *, resumable: bool = True,
                    remedy: str | None = None) -> StorageError:
    """A failed upload or download during a run, as a :class:`StorageError` naming the URL."""
    what, fix = problem(exc)
    return StorageError(public(url), what, resumable=resumable, remedy=remedy or fix)
