"""Fault tests: brokers killed and restarted, worker processes killed, while runs are in flight."""
