"""sealpost: a self-hostable end-to-end encrypted messenger.

The protocol core lives in :mod:`sealpost.protocol` (sans-I/O) on top of the thin
primitive wrappers in :mod:`sealpost.crypto`.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
