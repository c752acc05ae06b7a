"""Backends: connections and options shared by stores and transports.

A store and a transport that speak to the same kind of server (PostgreSQL,
Redis, a SQLite file) share their connection plumbing here, and every
``from_url`` shares the URL option parsing of :mod:`._options`. Stores
(``flowkit.stores``) and transports (``flowkit.transports``) import this
package, never each other; it imports neither of them.
"""
