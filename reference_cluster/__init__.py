"""A local-first shopping-list system built on :mod:`crdts`, used to show convergence
under partitions.

The package is cut into layers, each a folder that imports only from the layers below it
(``docs/architecture.md``): :mod:`reference_cluster.errors`, ``protocol``,
:mod:`reference_cluster.shopping_list`, ``cores``, ``storage``,
:mod:`reference_cluster.sim`, ``processes`` and ``cli``.
"""

__all__: list[str] = []
