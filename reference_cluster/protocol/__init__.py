"""Layer 1, the protocol: what crosses the wire and what a core may ask of its shell.

The closed family of messages and their codec (:mod:`.messages`), the effects a core
returns (:mod:`.effects`), the contract a replicated document keeps
(:mod:`.replication`) and where a list lives (:mod:`.placement`). Imports only
:mod:`crdts` and :mod:`reference_cluster.errors`.
"""
