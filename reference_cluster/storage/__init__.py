"""Layer 4, storage: the SQLite stores that the server and client shells persist to.

One transaction per batch of effects, canonical encodings with a digest beside each
state, and corruption reported as :class:`~reference_cluster.errors.StoreCorrupt`.
Imports the layers below only.
"""
