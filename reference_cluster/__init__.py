"""A local-first shopping-list system built on :mod:`crdts`, used to show convergence
under partitions."""

__all__: list[str] = []
