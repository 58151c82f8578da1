"""Damage a Parquet file the way a disk or a copy does: bytes changed inside a compressed page,
so that a reader that checks no page checksum decodes other, plausible values without an error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

FLIPPED_BYTES = 64


def flip_bytes_silently(
    file: Path, column: str, valid: Callable[[object], bool] = lambda value: value is not None and value > 0
) -> int:
    """Flip the lowest bit of 64 bytes inside ``column``'s pages (row group 0) at the first place
    where a reader that verifies no checksum still decodes the file, into other values that are
    all ``valid`` (by default positive: ids the validation accepts); the file is changed in place.
    How many values changed."""
    file = Path(file)
    original = file.read_bytes()
    metadata = pq.ParquetFile(file).metadata
    index = metadata.schema.to_arrow_schema().get_field_index(column)
    chunk = metadata.row_group(0).column(index)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    values = pq.read_table(file, columns=[column]).column(0).to_pylist()
    for offset in range(start, start + chunk.total_compressed_size - FLIPPED_BYTES, 8):
        damaged = bytearray(original)
        for position in range(offset, offset + FLIPPED_BYTES):
            damaged[position] ^= 0x01
        file.write_bytes(damaged)
        try:
            decoded = pq.read_table(file, columns=[column], page_checksum_verification=False).column(0).to_pylist()
        except OSError:
            continue  # the damage broke the decoding: not the silent kind this looks for
        changed = sum(a != b for a, b in zip(decoded, values, strict=True))
        if changed and all(map(valid, decoded)):
            return changed
    file.write_bytes(original)
    raise AssertionError(f"no place in {file}'s {column} pages decodes silently into other values")
