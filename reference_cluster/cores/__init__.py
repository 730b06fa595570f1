"""Layer 3, the cores: the broker's, server's and client's logic as plain classes.

A core takes a message and the time and returns the messages to send and what to persist
(:mod:`reference_cluster.protocol.effects`); it opens no socket, reads no clock, starts
no thread and touches no database. The accounts rules (:mod:`.accounts`), the replicated
accounts directory (:mod:`.directory`) and the retry back-off (:mod:`.backoff`) are pure
logic of the same kind. Imports the layers below only.
"""
