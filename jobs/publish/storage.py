"""Object stores behind the publisher: a local folder (the default bucket) and S3.

Both speak the same small interface — put with headers, get, list with MD5s, delete —
so publishing, verifying, pruning and rolling back are written once. The local store
writes each object to a temporary name and renames it, so a reader (``recflow cdn``)
never sees half an object; S3 PUTs are atomic per object already.

S3 requests go through boto3 with botocore's "standard" retry mode: throttling
(SlowDown, 503) and 5xx answers are retried with exponential backoff and jitter, up to
``RECFLOW_PUBLISH_MAX_ATTEMPTS`` attempts. Concurrency is the caller's bounded thread
pool; the client's connection pool is sized to match.

The local store accepts only keys an S3 bucket would hold as plain names: no ``.`` or
``..`` segment, no empty segment, no NUL or backslash. A folder would otherwise resolve
``recs/v/../x`` to ``recs/x`` — a different object than S3 stores under that key — and a
symlink could lead a delete out of the store; symlinks are not objects, and are neither
listed, read nor followed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

from jobs.config import Settings, secret_value
from jobs.publish.layout import md5_hex


class ObjectStore(Protocol):
    """Where a publish lands."""

    description: str

    def put(self, key: str, data: bytes, headers: dict[str, str]) -> None: ...

    def get(self, key: str) -> bytes | None: ...

    def put_file(self, key: str, path: Path, headers: dict[str, str]) -> None:
        """Upload a file of any size (S3: multipart), without reading it into memory."""
        ...

    def get_file(self, key: str, dest: Path) -> bool:
        """Download one object to ``dest``; False when it does not exist."""
        ...

    def md5(self, key: str) -> str | None:
        """MD5 hex of one object (S3's ETag), or None when it does not exist."""
        ...

    def list(self, prefix: str) -> Iterator[tuple[str, str]]:
        """(key, md5 hex) of every object under ``prefix``, in key order."""
        ...

    def delete(self, keys: Iterable[str]) -> int: ...


# HTTP headers an object is stored with, as boto3's put_object names them.
_HEADER_ARGS = {
    "Content-Type": "ContentType",
    "Content-Encoding": "ContentEncoding",
    "Cache-Control": "CacheControl",
}


class UnsafeKeyError(ValueError):
    """A key the local store refuses: it is not a plain name inside the store."""


def check_key(key: str, prefix: bool = False) -> str:
    """``key`` unchanged when it is a plain relative name; UnsafeKeyError otherwise.

    A prefix (``prefix=True``) may be empty or end with ``/``.
    """
    if prefix and key == "":
        return key
    parts = key.split("/")
    if prefix and key.endswith("/"):
        parts = parts[:-1]
    bad = not key or "\x00" in key or "\\" in key or any(part in ("", ".", "..") for part in parts)
    if bad:
        raise UnsafeKeyError(f"key {key!r} is not a plain object name (no '.', '..', '//', NUL)")
    return key


class LocalStore:
    """A folder standing in for the bucket; object key = relative path."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.description = str(self.root)
        # Folders a PUT already checked and created: a publish writes thousands of objects
        # into 256 folders, and resolving each object's folder again (a syscall per path
        # component) cost more than writing it. Only put() uses this, for the store's life
        # (one step); every other operation resolves afresh.
        self._checked: set[Path] = set()

    def _path(self, key: str, prefix: bool = False) -> Path:
        """Where ``key`` lives: never outside the store, never through a symlinked folder."""
        check_key(key, prefix)
        root = self.root.resolve()
        path = root / key
        # The folders on the way must be real ones inside the store; the object itself is
        # not resolved, so a symlink there is seen as one (and never followed).
        if not path.parent.resolve().is_relative_to(root):
            raise UnsafeKeyError(f"key {key!r} leads out of the store")
        return path

    def _put_path(self, key: str) -> Path:
        """:meth:`_path` for a PUT, its folder created; folders checked once per store."""
        parent = key.rpartition("/")[0]
        cached = self.root / parent
        if parent and cached in self._checked:
            check_key(key)
            return cached / key.rpartition("/")[2]
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        if parent:
            self._checked.add(cached)
        return path

    @staticmethod
    def _is_object(path: Path) -> bool:
        return path.is_file() and not path.is_symlink()

    def put(self, key: str, data: bytes, headers: dict[str, str]) -> None:
        path = self._put_path(key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(data)}.tmp")
        try:
            tmp.write_bytes(data)
        except FileNotFoundError:
            # A delete emptied and removed the cached folder since: check and create it again.
            self._checked.discard(path.parent)
            path = self._put_path(key)
            tmp.write_bytes(data)
        tmp.replace(path)

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        return path.read_bytes() if self._is_object(path) else None

    def put_file(self, key: str, path: Path, headers: dict[str, str]) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{id(path)}.tmp")
        shutil.copyfile(path, tmp)
        tmp.replace(target)

    def get_file(self, key: str, dest: Path) -> bool:
        source = self._path(key)
        if not self._is_object(source):
            return False
        shutil.copyfile(source, dest)
        return True

    def md5(self, key: str) -> str | None:
        data = self.get(key)
        return md5_hex(data) if data is not None else None

    def list(self, prefix: str) -> Iterator[tuple[str, str]]:
        base = self._path(prefix, prefix=True) if prefix else self.root.resolve()
        start = base if base.is_dir() and not base.is_symlink() else base.parent
        if not start.exists():
            return
        root = self.root.resolve()
        # rglob does not descend into symlinked folders; symlinked files are skipped here.
        found = sorted(
            str(p.relative_to(root))
            for p in start.rglob("*")
            if self._is_object(p) and not p.name.startswith(".")
        )
        for key in found:
            if key.startswith(prefix):
                yield key, md5_hex((root / key).read_bytes())

    def delete(self, keys: Iterable[str]) -> int:
        n = 0
        root = self.root.resolve()
        for key in keys:
            path = self._path(key)
            if not (path.is_symlink() or path.is_file()):
                continue  # S3 semantics: deleting a missing key is not an error
            path.unlink()  # a symlink goes, never what it points at
            n += 1
            for parent in path.parents:  # drop emptied folders, never the root
                if parent == root or any(parent.iterdir()):
                    break
                parent.rmdir()
        return n


class S3Store:
    """An S3 bucket (or any S3-compatible server) through boto3."""

    def __init__(self, settings: Settings) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = settings.publish_bucket
        self.description = f"s3://{self.bucket}"
        config = Config(
            retries={"max_attempts": settings.publish_max_attempts, "mode": "standard"},
            max_pool_connections=max(10, settings.publish_workers),
            s3={"addressing_style": "path"} if settings.s3_endpoint_url else {},
        )
        self.client = boto3.client(
            "s3",
            endpoint_url=secret_value(settings.s3_endpoint_url),
            region_name=settings.aws_region,
            aws_access_key_id=secret_value(settings.aws_access_key_id),
            aws_secret_access_key=secret_value(settings.aws_secret_access_key),
            config=config,
        )

    def put(self, key: str, data: bytes, headers: dict[str, str]) -> None:
        extra = {arg: headers[name] for name, arg in _HEADER_ARGS.items() if name in headers}
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **extra)

    def get(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def put_file(self, key: str, path: Path, headers: dict[str, str]) -> None:
        extra = {arg: headers[name] for name, arg in _HEADER_ARGS.items() if name in headers}
        self.client.upload_file(str(path), self.bucket, key, ExtraArgs=extra)

    def get_file(self, key: str, dest: Path) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.download_file(self.bucket, key, str(dest))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def md5(self, key: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)["ETag"].strip('"')
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def list(self, prefix: str) -> Iterator[tuple[str, str]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        for page in pages:
            for obj in page.get("Contents", []):
                yield obj["Key"], obj["ETag"].strip('"')

    def delete(self, keys: Iterable[str]) -> int:
        batch: list[str] = []
        n = 0
        for key in keys:
            batch.append(key)
            if len(batch) == 1000:  # DeleteObjects takes at most 1,000 keys
                n += self._delete(batch)
                batch = []
        return n + (self._delete(batch) if batch else 0)

    def _delete(self, keys: list[str]) -> int:
        answer = self.client.delete_objects(
            Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
        )
        if answer.get("Errors"):
            first = answer["Errors"][0]
            raise RuntimeError(f"S3 delete failed for {first['Key']}: {first['Message']}")
        return len(keys)


def open_store(settings: Settings) -> ObjectStore:
    """The configured target (``RECFLOW_PUBLISH_TARGET``)."""
    if settings.publish_target == "s3":
        return S3Store(settings)
    assert settings.publish_dir is not None
    return LocalStore(settings.publish_dir)
