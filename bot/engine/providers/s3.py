"""The Source/AWS/S3 and Deploy/AWS/S3 actions on local buckets under the data directory.

A bucket is the directory ``<data dir>/s3/<bucket>/`` and an object the file at its key below it
(``object_path``); ``/`` in a key makes subdirectories, as S3's console shows "folders". The rules
follow CodePipeline's action references:

- **Source** ("Amazon S3 source action reference",
  https://docs.aws.amazon.com/codepipeline/latest/userguide/action-reference-S3.html):
  ``S3Bucket`` and ``S3ObjectKey`` name a zip whose contents become the output artifact
  (``fetch_source``). The revision is the object's content hash shown as S3 shows a single-part
  upload's ETag (the MD5 of the bytes, 32 hex digits; ``s3_revision``); the action's output
  variables are ``ETag`` and ``VersionId`` (local buckets keep no versions: ``VersionId`` is the
  ETag, which names the content just as uniquely). ``PollForSourceChanges`` (absent means on)
  lets the source poller start an execution when ``s3_revision`` changes.
- **Deploy** ("Amazon S3 deploy action reference",
  https://docs.aws.amazon.com/codepipeline/latest/userguide/action-reference-S3Deploy.html):
  ``BucketName``; ``Extract`` "true" writes the input artifact's files into the bucket, under
  ``ObjectKey`` as a key prefix when given; "false" stores the artifact zipped as the object
  ``ObjectKey``, then required (``deploy``). As on AWS, objects already in the bucket and not in
  the artifact stay. ``CannedACL``, ``CacheControl`` and ``KMSEncryptionKeyARN`` have no local
  meaning (no ACLs, no HTTP serving, no KMS) and are accepted without effect.

Objects are written atomically (a temporary file renamed over the key), so a poller or reader
never sees half an object. Nothing is written outside the bucket's directory: keys with ``.`` or
``..`` segments, a leading ``/`` or NUL are refused, and no directory is entered through a
symbolic link that leads elsewhere.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bot.engine.errors import EngineError

__all__ = [
    "S3Deployment",
    "S3Error",
    "SourceObject",
    "bucket_dir",
    "deploy",
    "deploy_configuration_problem",
    "fetch_source",
    "object_path",
    "parse_extract",
    "s3_revision",
    "source_configuration_problem",
]

_BUCKET_RE: Final = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_RE: Final = re.compile(r"\d+\.\d+\.\d+\.\d+")
_KEY_MAX_BYTES: Final = 1024
_CHUNK: Final = 1 << 20


class S3Error(EngineError):
    """A local S3 action failed; the message suits the action's failure summary."""


# --------------------------------------------------------------------------- names and paths


def _bucket_problem(bucket: str) -> str | None:
    """S3's general purpose bucket naming rules: 3 to 63 lower-case letters, digits, ``.`` and
    ``-``, starting and ending with a letter or digit, no ``..``, not an IP address
    (https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html)."""
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket or _IP_RE.fullmatch(bucket):
        return (
            "is not a valid bucket name (3 to 63 lower-case letters, digits, . and -, starting "
            "and ending with a letter or digit)"
        )
    return None


def _key_parts(key: str, *, prefix: bool = False) -> list[str]:
    """A key's path segments; raises ``S3Error`` for a key that cannot be a local file path.

    S3 keys may hold almost anything; locally they are paths under the bucket, so a leading
    ``/``, empty, ``.`` and ``..`` segments, and NUL are refused (``prefix`` allows the trailing
    ``/`` of a "folder" and the empty prefix)."""
    if "\0" in key or len(key.encode()) > _KEY_MAX_BYTES:
        raise S3Error(f"Object key {key!r} cannot be stored locally (NUL, or over 1024 bytes)")
    text = key.rstrip("/") if prefix else key
    if not text:
        if prefix:
            return []
        raise S3Error("The object key is empty")
    parts = text.split("/")
    if key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise S3Error(
            f"Object key {key!r} cannot be stored locally: it must not start with /, nor hold "
            "empty, . or .. segments"
        )
    return parts


def bucket_dir(*, data_dir: Path, bucket: str) -> Path:
    """``<data dir>/s3/<bucket>``; raises ``S3Error`` for an invalid bucket name."""
    problem = _bucket_problem(bucket)
    if problem:
        raise S3Error(f"Bucket {bucket!r} {problem}")
    return data_dir / "s3" / bucket


def object_path(*, data_dir: Path, bucket: str, key: str) -> Path:
    """``<data dir>/s3/<bucket>/<key>``; raises ``S3Error`` for a name that cannot be stored."""
    return bucket_dir(data_dir=data_dir, bucket=bucket).joinpath(*_key_parts(key))


def _inside(path: Path, root: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))


# --------------------------------------------------------------------------- configuration


def parse_extract(value: Any) -> bool:
    """``Extract`` as a bool: "true" or "false" (any case); raises ``S3Error`` otherwise."""
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise S3Error(f'Extract must be "true" or "false" (got {value!r})')
    return text == "true"


def _unresolved(value: Any) -> bool:
    return isinstance(value, str) and "#{" in value


def source_configuration_problem(configuration: Mapping[str, Any]) -> str | None:
    """Why an S3 source's ``S3Bucket`` / ``S3ObjectKey`` cannot be read locally, or None.
    Values holding ``#{variables}`` are checked when the action runs."""
    bucket, key = configuration.get("S3Bucket"), configuration.get("S3ObjectKey")
    if isinstance(bucket, str) and not _unresolved(bucket) and _bucket_problem(bucket):
        return f"S3Bucket {bucket!r} {_bucket_problem(bucket)}"
    if isinstance(key, str) and not _unresolved(key):
        try:
            _key_parts(key)
        except S3Error as exc:
            return f"S3ObjectKey: {exc}"
    return None


def deploy_configuration_problem(configuration: Mapping[str, Any]) -> str | None:
    """Why an S3 deploy action's configuration cannot run locally, or None: ``BucketName`` must
    be a valid bucket name, ``Extract`` "true" or "false", and ``ObjectKey`` is required when
    ``Extract`` is "false" (the deploy action reference). ``#{variables}`` are checked at run."""
    bucket = configuration.get("BucketName")
    if isinstance(bucket, str) and not _unresolved(bucket) and _bucket_problem(bucket):
        return f"BucketName {bucket!r} {_bucket_problem(bucket)}"
    extract = configuration.get("Extract")
    if extract is None or _unresolved(extract):
        return None
    try:
        extracting = parse_extract(extract)
    except S3Error as exc:
        return str(exc)
    key = configuration.get("ObjectKey")
    if not extracting and not key:
        return 'ObjectKey is required when Extract is "false"'
    if isinstance(key, str) and key and not _unresolved(key):
        try:
            _key_parts(key, prefix=extracting)
        except S3Error as exc:
            return f"ObjectKey: {exc}"
    return None


# --------------------------------------------------------------------------- source


def _md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def s3_revision(data_dir: Path, bucket: str, key: str) -> str | None:
    """The object's current revision: the MD5 of its bytes as 32 hex digits (S3's ETag for a
    single-part upload, without the quotes), or None when there is no such object (or the names
    cannot be stored locally). The source poller compares it with the last one seen."""
    try:
        path = object_path(data_dir=data_dir, bucket=bucket, key=key)
    except S3Error:
        return None
    if not path.is_file() or not _inside(path, data_dir / "s3" / bucket):
        return None
    try:
        return _md5_of(path)
    except OSError:
        return None


@dataclass(frozen=True, kw_only=True)
class SourceObject:
    """The object a source action read: its ETag (the revision), size in bytes and
    modification time (UTC)."""

    bucket: str
    key: str
    etag: str
    size: int
    last_modified: datetime

    @property
    def summary(self) -> str:
        """The revision summary: ``<key> (ETag <etag>)``."""
        return f"{self.key} (ETag {self.etag})"


def fetch_source(*, data_dir: Path, bucket: str, key: str, destination: Path) -> SourceObject:
    """Unzip the object ``s3://bucket/key`` into ``destination`` (an empty directory, created).

    The object is copied once and both hashed and unzipped from that copy, so the ETag always
    names the files extracted even if the object is replaced meanwhile. Raises ``S3Error`` when
    the object does not exist, is not a zip (the action reference: downstream actions that
    expect a zip fail; locally the source fails, naming the object), or holds a member whose
    path would land outside ``destination``. Unix permission bits stored in the zip are kept
    (hook scripts stay executable).
    """
    path = object_path(data_dir=data_dir, bucket=bucket, key=key)
    if not path.is_file() or not _inside(path, data_dir / "s3" / bucket):
        raise S3Error(
            f"The object s3://{bucket}/{key} does not exist (expected the file {path}); put "
            "the source zip there"
        )
    destination.mkdir(parents=True, exist_ok=True)
    modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    with tempfile.TemporaryDirectory(dir=destination.parent) as scratch:
        copy = Path(scratch) / "object"
        shutil.copyfile(path, copy)
        etag = _md5_of(copy)
        if not zipfile.is_zipfile(copy):
            raise S3Error(
                f"The object s3://{bucket}/{key} is not a zip file: an S3 source passes a zip "
                "of the source files"
            )
        with zipfile.ZipFile(copy) as archive:
            _extract(archive, destination, f"s3://{bucket}/{key}")
        size = copy.stat().st_size
    return SourceObject(bucket=bucket, key=key, etag=etag, size=size, last_modified=modified)


def _extract(archive: zipfile.ZipFile, destination: Path, name: str) -> None:
    root = Path(os.path.realpath(destination))
    for member in archive.infolist():
        parts = [p for p in member.filename.replace("\\", "/").split("/") if p not in ("", ".")]
        if member.filename.startswith("/") or ".." in parts:
            raise S3Error(
                f"{name}: zip member {member.filename!r} would be extracted outside the "
                "artifact; refusing the archive"
            )
        if not parts:
            continue
        target = destination.joinpath(*parts)
        if not Path(os.path.realpath(target.parent)).is_relative_to(root):
            raise S3Error(f"{name}: zip member {member.filename!r} leads outside the artifact")
        if member.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink():
            target.unlink()
        with archive.open(member) as source, target.open("wb") as sink:
            shutil.copyfileobj(source, sink, _CHUNK)
        mode = (member.external_attr >> 16) & 0o777
        if mode and not stat.S_ISLNK(member.external_attr >> 16):
            target.chmod(mode | stat.S_IRUSR | stat.S_IWUSR)


# --------------------------------------------------------------------------- deploy


@dataclass(frozen=True, kw_only=True)
class S3Deployment:
    """What a deploy action wrote: ``keys`` (sorted), and ``summary`` for the action."""

    bucket: str
    keys: tuple[str, ...]
    summary: str
    skipped: tuple[str, ...] = ()


def _artifact_files(artifact: Path) -> Iterator[tuple[str, Path | None]]:
    """``(relative posix path, file to copy)`` for every file of ``artifact``; the file is None
    for a symbolic link that does not lead to a regular file inside the artifact (never
    followed out of it). Directories are never entered through links."""
    root = Path(os.path.realpath(artifact))
    for directory, dirnames, filenames in os.walk(artifact):
        base = Path(directory)
        linked_dirs = [d for d in dirnames if (base / d).is_symlink()]
        dirnames[:] = sorted(d for d in dirnames if d not in linked_dirs)
        for name in sorted([*filenames, *linked_dirs]):
            path = base / name
            rel = path.relative_to(artifact).as_posix()
            if path.is_symlink():
                target = Path(os.path.realpath(path))
                yield rel, target if target.is_relative_to(root) and target.is_file() else None
            else:
                yield rel, path


def _write_object(bucket_root: Path, parts: list[str], source: Path) -> None:
    """Copy ``source`` to the object at ``parts`` atomically, never through a link leading
    outside the bucket."""
    target = bucket_root.joinpath(*parts)
    parent = target.parent
    probe = bucket_root
    for part in parts[:-1]:
        probe = probe / part
        if probe.is_symlink() or (probe.exists() and not probe.is_dir()):
            raise S3Error(
                f"Cannot write {'/'.join(parts)}: {probe.relative_to(bucket_root)} is a file or "
                "link in the bucket, where a key prefix needs a directory"
            )
    parent.mkdir(parents=True, exist_ok=True)
    if not _inside(parent, bucket_root):
        raise S3Error(f"Cannot write {'/'.join(parts)}: it leads outside the bucket")
    if target.is_dir() and not target.is_symlink():
        raise S3Error(
            f"Cannot write the object {'/'.join(parts)}: the bucket holds objects under "
            f"{'/'.join(parts)}/ (a local bucket cannot have both)"
        )
    handle, temporary = tempfile.mkstemp(dir=parent, prefix=".pipebot-upload-")
    os.close(handle)
    try:
        shutil.copyfile(source, temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def deploy(
    *, data_dir: Path, bucket: str, artifact: Path, extract: bool, object_key: str | None
) -> S3Deployment:
    """Deploy the input ``artifact`` (a directory) to the local bucket ``bucket``.

    ``extract`` True: each file becomes the object ``<object_key>/<relative path>`` (no prefix
    when ``object_key`` is empty); ``extract`` False: the artifact zipped becomes the object
    ``object_key`` (required). Symbolic links that do not lead to a file inside the artifact are
    skipped and named in the summary. Raises ``S3Error``.
    """
    if not artifact.is_dir():
        raise S3Error(f"The input artifact directory {artifact} does not exist")
    root = bucket_dir(data_dir=data_dir, bucket=bucket)
    root.mkdir(parents=True, exist_ok=True)
    files = list(_artifact_files(artifact))
    skipped = tuple(rel for rel, source in files if source is None)
    if extract:
        prefix = _key_parts(object_key or "", prefix=True)
        keys = []
        for rel, source in files:
            if source is None:
                continue
            parts = [*prefix, *rel.split("/")]
            _write_object(root, parts, source)
            keys.append("/".join(parts))
        where = f"s3://{bucket}/" + ("/".join(prefix) + "/" if prefix else "")
        summary = f"Extracted {len(keys)} file{'s' if len(keys) != 1 else ''} into {where}"
    else:
        if not object_key:
            raise S3Error('ObjectKey is required when Extract is "false"')
        parts = _key_parts(object_key)
        with tempfile.TemporaryDirectory(dir=root.parent) as scratch:
            bundle = Path(scratch) / "artifact.zip"
            with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as archive:
                for rel, source in files:
                    if source is not None:
                        archive.write(source, rel)
            etag = _md5_of(bundle)
            _write_object(root, parts, bundle)
        keys = ["/".join(parts)]
        summary = f"Uploaded the artifact zipped as s3://{bucket}/{keys[0]} (ETag {etag})"
    if skipped:
        summary += f"; skipped links leading outside the artifact: {', '.join(skipped)}"
    return S3Deployment(bucket=bucket, keys=tuple(sorted(keys)), summary=summary, skipped=skipped)
