"""Files and folders that are local paths or S3 objects and prefixes, read and written through
fsspec: where a feature folder lives (RAILYARD_FEATURES_URI).

S3 goes through pyarrow's S3 client wrapped as an fsspec filesystem (``ArrowFSWrapper``): the
current ``s3fs`` cannot be installed beside this lock's boto3 (its aiobotocore pins an older
botocore). Credentials come from the standard AWS chain (environment, shared profile, instance
or container role), as boto3's do; ``endpoint_url`` (RAILYARD_S3_ENDPOINT_URL) points at an
S3-compatible store (MinIO, moto). An S3 object appears whole when its upload ends, so a file
written here is never read half-written, on either side.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import urlparse

from railyard.fsutil import atomic_write_text

if TYPE_CHECKING:  # imported where used: settings name a Location, and most commands read no Parquet
    import polars as pl
    import pyarrow.parquet as pq

S3 = "s3://"


@dataclass(frozen=True)
class Location:
    """A local absolute path or an ``s3://bucket/key`` (a file, or a folder: a key prefix)."""

    url: str
    endpoint_url: str | None = None  # S3 only

    @classmethod
    def of(cls, where: Location | Path | str, endpoint_url: str | None = None) -> Location:
        if isinstance(where, Location):
            return where
        text = str(where)
        if text.startswith(S3):
            if not urlparse(text).netloc:
                raise ValueError(f"{text!r} names no bucket: expected s3://bucket/prefix")
            return cls(text.rstrip("/"), endpoint_url)
        if "://" in text:
            raise ValueError(f"{text!r}: a feature folder is a local path or an s3:// URI")
        return cls(str(Path(text).absolute()))

    @property
    def is_s3(self) -> bool:
        return self.url.startswith(S3)

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> Location:
        return Location(self.url.rstrip("/").rsplit("/", 1)[0], self.endpoint_url)

    def __truediv__(self, name: str) -> Location:
        return Location(f"{self.url.rstrip('/')}/{name}", self.endpoint_url)

    def __str__(self) -> str:
        return self.url

    @property
    def local_path(self) -> Path:
        if self.is_s3:
            raise ValueError(f"{self.url} is not a local path")
        return Path(self.url)

    # -- reading ------------------------------------------------------------------------------

    def glob(self, pattern: str) -> list[Location]:
        """The files in this folder whose names match ``pattern``, sorted by name."""
        found = self._fs().glob(f"{self._fs_path()}/{pattern}")
        return sorted((self._at(path) for path in found), key=lambda location: location.url)

    def is_file(self) -> bool:
        return self._fs().isfile(self._fs_path())

    def exists(self) -> bool:
        return self._fs().exists(self._fs_path())

    def read_text(self) -> str:
        return self._fs().cat_file(self._fs_path()).decode("utf-8")

    def parquet_source(self) -> str | IO[bytes]:
        """What Polars and pyarrow read: the path itself when local (memory-mapped), else an open,
        seekable remote file."""
        return self.url if not self.is_s3 else self._fs().open(self._fs_path(), "rb")

    # -- writing ------------------------------------------------------------------------------

    def write_text(self, text: str) -> None:
        """The whole file at once: a local file renamed into place, an S3 object in one upload."""
        if self.is_s3:
            self._fs().pipe_file(self._fs_path(), text.encode("utf-8"))
        else:
            atomic_write_text(self.local_path, text)

    def write_parquet(self, frame: pl.DataFrame, **options) -> None:
        """``frame`` as a Parquet file with page checksums (``parquet_io.write``'s options)."""
        from railyard import parquet_io

        if not self.is_s3:
            self.local_path.parent.mkdir(parents=True, exist_ok=True)
            parquet_io.write(frame, self.local_path, **options)
            return
        with self._fs().open(self._fs_path(), "wb") as sink:
            parquet_io.write(frame, sink, **options)

    def remove(self) -> None:
        """This folder (or file) and everything under it, if it exists."""
        if self.exists():
            self._fs().rm(self._fs_path(), recursive=True)

    # -- fsspec ---------------------------------------------------------------------------------

    def _fs(self):
        return _filesystem(self.endpoint_url if self.is_s3 else None, self.is_s3)

    def _fs_path(self) -> str:
        return self.url.removeprefix(S3)

    def _at(self, fs_path: str) -> Location:
        return Location(S3 + fs_path if self.is_s3 else fs_path, self.endpoint_url)


def read_parquet(locations: list[Location], columns: list[str] | None = None, *, schema_only=False) -> pl.DataFrame:
    """Files of one schema, as one frame in their order, their page checksums verified (a
    damaged file is refused naming it: ``parquet_io.DamagedParquet``); ``schema_only``: no rows."""
    import polars as pl

    from railyard import parquet_io

    frames = []
    for location in locations:
        source = location.parquet_source()
        if isinstance(source, str):
            frames.append(parquet_io.read(source, columns, schema_only=schema_only))
            continue
        with source:  # a remote file: closed once read
            frames.append(parquet_io.read(source, columns, name=location, schema_only=schema_only))
    return pl.concat(frames)


def parquet_file(location: Location) -> pq.ParquetFile:
    """An open file whose reads verify its page checksums; read it under
    ``parquet_io.reading(location)`` to have a damaged page refused naming the file."""
    from railyard import parquet_io

    return parquet_io.open_file(location.parquet_source())  # a remote file stays open while the row groups stream


@functools.cache
def _filesystem(endpoint_url: str | None, s3: bool):
    """One fsspec filesystem per process and endpoint."""
    import fsspec

    if not s3:
        return fsspec.filesystem("file")
    from fsspec.implementations.arrow import ArrowFSWrapper
    from pyarrow import fs

    options = {}
    if endpoint_url:
        endpoint = urlparse(endpoint_url)
        options = {"endpoint_override": endpoint.netloc, "scheme": endpoint.scheme or "https"}
    return ArrowFSWrapper(fs.S3FileSystem(**options))
