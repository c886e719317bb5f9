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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, cast
from urllib.parse import urlsplit, urlunsplit

from importer.exceptions import ConfigError, ImporterError, InputChanged, InputError, StorageError

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


#: Any URL in a message (an exception's text): its query string and fragment go.
_URL_QUERY = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s'\"?#]*)[?#][^\s'\"]*")


def scrub(text: str) -> str:
    """``text`` with every URL in it cut to what :func:`public` shows (no query secrets)."""
    return _URL_QUERY.sub(r"\1", text)


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
    # fsspec's http reports any failed HEAD/GET as FileNotFoundError: the answer is its cause
    refused = getattr(exc.__cause__, "status", None) in (401, 403)
    if not refused and (isinstance(exc, FileNotFoundError) or "nosuchbucket" in lowered
                        or "404" in lowered):
        return ("no such object or bucket",
                "check the URL (bucket, prefix and name) and the account it is read with")
    if "unable to locate credentials" in lowered or type(exc).__name__ == "NoCredentialsError":
        return ("no credentials found",
                "set them the cloud's standard way (environment variables, a profile, an "
                "instance or workload role) and run again")
    if any(code in lowered for code in ("expiredtoken", "token has expired", "expired")):
        return ("the credentials have expired",
                "renew them (e.g. aws sso login, or the role's session) and run again")
    if refused or isinstance(exc, PermissionError) or any(
        code in lowered for code in ("accessdenied", "access denied", "forbidden", "403",
                                     "invalidaccesskeyid", "signaturedoesnotmatch")):
        return ("access denied",
                "check the credentials in the environment or profile and that they may read "
                "and write this bucket and prefix")
    if isinstance(exc, ConnectionError | TimeoutError):
        return (f"the storage service did not answer ({type(exc).__name__})",
                "check the network, the endpoint and any proxy, then run again")
    detail = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return (scrub(detail)[:300], "check the URL and the credentials, then run again")


#: What tells one version of an object from a rewrite, most precise first, as each
#: filesystem's ``info`` names it: GCS generation, S3/Azure/HTTP ETag, then times.
_VERSION_KEYS = ("generation", "ETag", "etag", "Last-Modified", "LastModified",
                 "last_modified", "updated", "mtime")  # fmt: skip

#: Bytes per range request when streaming: a request's latency amortised over 8 MiB, and
#: memory bounded by one block whatever the object's size.
STREAM_BLOCK = 8 * 1024 * 1024
#: Random access (Parquet): blocks of 4 MiB, at most 8 kept (32 MiB).
RANGE_BLOCK = 4 * 1024 * 1024
RANGE_BLOCKS = 8


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """One object in storage, or a file on the web, as listed or inspected."""

    url: str = field(repr=False)  # opened with; may hold a presigned query: never shown
    size: int | None
    #: ``ETag="…"``, ``generation=…`` or a modification time, as the listing gave it ("" when
    #: the service gives none): compared with the same field whenever the object is opened
    version: str
    #: Bytes per range request when streaming, if not :data:`STREAM_BLOCK` (inspection
    #: reads only a sample and a header)
    block: int = field(default=0, compare=False)

    @property
    def shown(self) -> str:
        return public(self.url)

    @property
    def identity(self) -> str:
        """For the run's fingerprint: which object, which version of it."""
        return f"{self.shown}\0{self.size}\0{self.version}"

    def open(self, *, ranges: bool = False) -> BinaryIO:
        """A binary file over the object, read by ranges, never downloaded whole.

        ``ranges``: random access (Parquet) through a small block cache; else a sequential
        stream (one GET on the web, where a server need not support ranges). Raises
        :class:`InputChanged` when the object is no longer the version inspected; S3 reads
        are then pinned to that ETag by s3fs (``If-Match`` on every range request). Any other
        failure to open is an :class:`InputError` naming it (:func:`problem`).
        """
        try:
            handle = self._open(ranges)
        except ImporterError:
            raise
        except Exception as exc:  # the storage client's own errors (OSError, botocore, aiohttp)
            what, remedy = problem(exc)
            raise InputError(self.shown, f"cannot be read: {what}", remedy) from None
        key, _, _ = self.version.partition("=")
        found = _opened_details(handle).get(key) if key else None
        if found and f"{key}={found}" != self.version:
            handle.close()
            raise InputChanged(self.shown, self.version, f"{key}={found}")
        return cast(BinaryIO, _Pinned(handle, self))

    def _open(self, ranges: bool) -> Any:
        fs, path = filesystem(self.url)
        if ranges:
            options: dict[str, Any] = {"block_size": RANGE_BLOCK, "cache_type": "blockcache",
                                       "cache_options": {"maxblocks": RANGE_BLOCKS}}
        elif is_web(self.url):
            options = {"block_size": 0}  # streamed: works whether or not ranges are served
        else:
            options = {"block_size": self.block or STREAM_BLOCK, "cache_type": "readahead"}
        return fs.open(path, "rb", **options)


class _Pinned:
    """The object's file, with the store's "no longer this version" refusal of a read
    raised as :class:`InputChanged` rather than an ``OSError``, so that no reader's handling
    of damaged files (pyarrow re-raises a Python file's own exception) mistakes it."""

    def __init__(self, handle: Any, origin: RemoteFile) -> None:
        self._handle = handle
        self._origin = origin

    def read(self, size: int = -1) -> bytes:
        try:
            return bytes(self._handle.read(size))
        except Exception as exc:
            raise self._translated(exc) from None

    def readinto(self, buffer: Any) -> int:
        try:
            return int(self._handle.readinto(buffer))
        except Exception as exc:
            raise self._translated(exc) from None

    def _translated(self, exc: Exception) -> Exception:
        """A refused version → InputChanged; any other failure → :class:`ReadFailed`."""
        if changed(exc):
            return InputChanged(self._origin.shown, self._origin.version, "")
        return ReadFailed(*problem(exc))

    def __getattr__(self, name: str) -> Any:  # seek, tell, close, closed, size, ...
        return getattr(self._handle, name)


class ReadFailed(OSError):
    """Reading an object failed in the storage client or the network, not in its data
    (an OSError, as readers expect of a file); ``what`` and ``remedy`` from :func:`problem`."""

    def __init__(self, what: str, remedy: str) -> None:
        super().__init__(what)
        self.what = what
        self.remedy = remedy


def remote_file(url: str, info: Mapping[str, Any]) -> RemoteFile:
    size = info.get("size")
    return RemoteFile(url, int(size) if size is not None else None, _version(info))


def _version(info: Mapping[str, Any]) -> str:
    for key in _VERSION_KEYS:
        if info.get(key):
            return f"{key}={info[key]}"
    return ""


def _opened_details(handle: Any) -> Mapping[str, Any]:
    """What the open file saw of the object: its details (S3, GCS, Azure) or, for a file
    streamed from the web, the headers of its one GET."""
    response = getattr(handle, "r", None)
    if response is not None and hasattr(response, "headers"):  # (case-insensitive headers)
        return {key: response.headers.get(key) for key in _VERSION_KEYS}
    details = getattr(handle, "details", None)
    return details if isinstance(details, Mapping) else {}


def changed(exc: BaseException) -> bool:
    """The service refused a read because the object is no longer the version opened
    (s3fs's ``FileExpired``, an HTTP 412 on ``If-Match``)."""
    return type(exc).__name__ == "FileExpired" or "precondition" in str(exc).lower()


def expand(url: str) -> list[RemoteFile]:
    """The objects a URL names, sorted: a glob's matches, a prefix's objects (one level, as
    a local directory), or the one object. Web URLs are single files (no listing on the web).

    Raises OSError (``FileNotFoundError`` included) as the service failed: see :func:`problem`.
    """
    fs, path = filesystem(url)
    # fsspec keeps one filesystem per process and its listings without expiry: a scheduler's
    # long-lived worker would see last night's objects
    fs.invalidate_cache()
    if is_web(url):
        return [remote_file(url, fs.info(path))]
    if any(ch in path for ch in "*?["):
        found = fs.glob(path, detail=True)
        return [remote_file(fs.unstrip_protocol(name), info)
                for name, info in sorted(found.items()) if info.get("type") != "directory"]
    info = fs.info(path)
    if info.get("type") != "directory":
        return [remote_file(url, info)]
    listed = fs.ls(path, detail=True)
    return [remote_file(fs.unstrip_protocol(entry["name"]), entry)
            for entry in sorted(listed, key=lambda e: str(e["name"]))
            if entry.get("type") != "directory"]


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
