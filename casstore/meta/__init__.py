"""Operational metadata: the records repository, pipeline run logs and manifests.

- :mod:`casstore.meta.models`: ``MetadataTarget``, ``MetadataContext``, ``MetadataRecord``.
- :mod:`casstore.meta.kinds`: the registered kinds and the JSON schema of each payload.
- :mod:`casstore.meta.journal`: an append-only JSON-lines log mirrored into SQLite.
- :mod:`casstore.meta.repository`: ``MetadataRepository`` and its embedded implementation.
- :mod:`casstore.meta.runs`: ``pipeline_runs``, ``step_logs`` and ``dq_results``.
- :mod:`casstore.meta.manifest`: manifest export and import.
"""
