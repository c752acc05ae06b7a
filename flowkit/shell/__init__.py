"""Machinery every shell shares: executing a node, committing transitions, commands.

The three shells (the in-memory ``flowkit.runtime``, the distributed
``flowkit.worker`` and the simulator in ``flowkit.testing``) are thin adapters
over this package.
"""
