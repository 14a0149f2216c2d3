"""Objects with hand-made download and sample records, and the time `cas log` shows."""

from __future__ import annotations

import io

from casstore.records import SampleRecord, iso_utc
from casstore.store import Store
from tests._helpers import put_download as stored_download
from tests._helpers import sha256


def when(store: Store, oid: str) -> str:
    """The time ``cas log`` shows for an object: its earliest record's, to the second."""
    created = store.records(oid)[0][1].created
    return iso_utc(created)[:19].replace("T", " ")


def put_download(
    store: Store,
    data: bytes,
    *,
    source_id: str | None = None,
    url: str = "https://data.example.org/dump.json.gz",
    etag: str | None = '"v1-abc"',
) -> str:
    """Store ``data`` as if ``cas fetch`` had downloaded it; return its id."""
    return stored_download(store, data, source_id=source_id, url=url, etag=etag)


def put_sample(store: Store, parent: str, data: bytes, *, n: int = 5, seed: int = 7) -> str:
    """Store ``data`` as a random sample of ``parent``; return its id."""
    stored = store.objects.write(io.BytesIO(data))
    record = SampleRecord(
        object=stored.id,
        size=stored.size,
        blake3=stored.blake3,
        parents=(parent,),
        regime="random",
        n_requested=n,
        n_taken=n,
        seed=seed,
        input_format="jsonl",
        output_format="jsonl",
        sampler_version="1",
        recipe=sha256(f"recipe {parent} {n} {seed}".encode()),
    )
    store.record_object(stored, record)
    return stored.id
