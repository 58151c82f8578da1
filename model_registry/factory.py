"""Open a model store from its URI: each URI scheme names a backend registered here.

The base (``store.py``) knows no backend; a new backend is a ``ModelStore`` subclass in its own
module plus one line in ``BACKENDS``. Backends are imported when first opened: boto3 loads only
for an ``s3://`` store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, urlsplit
from urllib.request import url2pathname

from model_registry.store import InvalidStoreURI, ModelStore

if TYPE_CHECKING:
    from model_registry.s3 import S3Options


def _open_local(
    uri: str, parsed: SplitResult, *, s3_endpoint_url: str | None, s3_options: S3Options | None
) -> ModelStore:
    from model_registry.local import LocalStore

    if not parsed.scheme:
        return LocalStore(Path(uri))
    if parsed.netloc not in ("", "localhost"):
        raise InvalidStoreURI(f"store URI {uri!r} names host {parsed.netloc!r}: file URIs must be local")
    return LocalStore(Path(url2pathname(parsed.path)))


def _open_s3(uri: str, parsed: SplitResult, *, s3_endpoint_url: str | None, s3_options: S3Options | None) -> ModelStore:
    from model_registry.s3 import S3Store

    if parsed.query or parsed.fragment:
        raise InvalidStoreURI(f"store URI {uri!r} has a query or fragment: use s3://bucket/prefix")
    return S3Store(parsed.netloc, parsed.path, endpoint_url=s3_endpoint_url, options=s3_options)


# URI scheme ("": a plain path) -> opener.
BACKENDS: dict[str, Callable[..., ModelStore]] = {"": _open_local, "file": _open_local, "s3": _open_s3}


def open_store(uri: str, *, s3_endpoint_url: str | None = None, s3_options: S3Options | None = None) -> ModelStore:
    """Open the store a URI names: ``file:///abs/path``, a plain path, or ``s3://bucket/prefix``.

    ``s3_options`` tunes S3 retries, timeouts and transfers; credentials come from boto3's chain.
    A URI that names no store is ``InvalidStoreURI`` (a refusal); opening touches no store.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidStoreURI(f"the model store URI is empty ({uri!r})")
    parsed = urlsplit(uri)
    opener = BACKENDS.get(parsed.scheme)
    if opener is None:
        raise InvalidStoreURI(
            f"unsupported store URI {uri!r} (scheme {parsed.scheme!r}): use file:///path, a plain path or s3://bucket/prefix"
        )
    return opener(uri, parsed, s3_endpoint_url=s3_endpoint_url, s3_options=s3_options)
