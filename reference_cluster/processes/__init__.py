"""Layer 6, the processes: the pyzmq shells around the cores and what starts them.

The broker, server and client shells (each a short loop that polls, decodes, hands the
message to its core and carries out the effects), the client agent driven by JSON lines,
the local-cluster launcher, the shared flags and environment (:mod:`.config`) and a
TCP link proxy that can cut links without privileges. Imports the layers below only.
"""
