"""Every Parquet file Railyard writes or reads goes through here: written with a CRC-32 checksum
in each page's header, read with those checksums verified.

A byte changed inside a compressed page (a disk, a copy, a transfer) can decode into other valid
values without any error; Parquet's page checksums are optional and neither Polars nor pyarrow
writes them by default, and Polars' own reader does not verify them. So files are written and
read by pyarrow (``write_page_checksum``, ``page_checksum_verification``) and handed to Polars
without a copy. A page whose checksum does not match, or that does not decode, is refused as
``DamagedParquet`` naming the file. Files from other tools that carry no checksums still read:
only pages that carry one are checked.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from railyard.errors import DataLoadError

Source = str | Path | IO[bytes]


class DamagedParquet(DataLoadError):
    """A Parquet file whose pages do not match their checksums or do not decode."""

    next_step = (
        "the file named in the message changed after it was written (a disk, a copy): restore it from its "
        "source; a feature folder is built anew by the next run"
    )


def write(frame: pl.DataFrame, target: Source, *, compression: str = "zstd", row_group_size: int | None = None) -> None:
    """``frame`` as a Parquet file with page checksums (``target``: a path or an open binary file)."""
    table = frame.to_arrow()
    pq.write_table(table, target, compression=compression, row_group_size=row_group_size, write_page_checksum=True)


def read(
    source: Source, columns: Sequence[str] | None = None, *, name: object = None, schema_only: bool = False
) -> pl.DataFrame:
    """One file (its ``columns``), its page checksums verified; ``name`` names it in an error
    (default: ``source``). ``schema_only``: no rows, from the footer alone."""
    with reading(source if name is None else name):
        file = open_file(source)
        if schema_only:
            table = file.schema_arrow.empty_table()
        else:
            table = file.read(columns=list(columns) if columns is not None else None)
    return pl.from_arrow(table)


def read_files(files: Sequence[Path], columns: Sequence[str] | None = None) -> pl.DataFrame:
    """Local files of one schema, as one frame in their order."""
    tables = []
    for file in files:
        with reading(file):
            tables.append(open_file(file).read(columns=list(columns) if columns is not None else None))
    # One frame from all the tables at once: much cheaper than a frame per file for many small files.
    return pl.from_arrow(pa.concat_tables(tables, promote_options="permissive"))


def open_file(source: Source) -> pq.ParquetFile:
    """A file whose reads (``read``, ``read_row_group``) verify its page checksums; read it
    under ``reading(name)`` for a named error."""
    return pq.ParquetFile(source, page_checksum_verification=True)


@contextmanager
def reading(name: object) -> Iterator[None]:
    """A failure to decode a Parquet file's pages becomes ``DamagedParquet`` naming it."""
    try:
        yield
    except (FileNotFoundError, PermissionError):
        raise  # not the file's contents
    except (OSError, pa.ArrowException) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "checksum" in first.lower():
            raise DamagedParquet(
                f"{name} is damaged: a page's contents no longer match its checksum ({first}); "
                "the file changed after it was written"
            ) from error
        raise DamagedParquet(f"{name} is damaged and cannot be read: {first}") from error
