"""Readers that turn every kind of binary-cache metadata into :mod:`cacheclient.model` objects.

One module per source format:

- :mod:`~cacheclient.metadata.clearsign`: the OpenPGP cleartext wrapper (RFC 4880 §7);
- :mod:`~cacheclient.metadata.manifest`: v3 manifests (``{"version": 3, "data": [...]}``);
- :mod:`~cacheclient.metadata.database`: Spack Database JSON (v2 ``index.json``, v3 index blob);
- :mod:`~cacheclient.metadata.specfile`: ``spec.json`` / ``.spec.json.sig`` / v3 spec blobs;
- :mod:`~cacheclient.metadata.page`: cache.spack.io package pages.

Readers are pure: they take bytes or text plus a ``source`` (the file or URL, used in error
messages) and never touch the network or the disk. Every problem with the input becomes a
:class:`~cacheclient.errors.MetadataError` naming the source and the key path.
"""

from __future__ import annotations

__all__: list[str] = []
