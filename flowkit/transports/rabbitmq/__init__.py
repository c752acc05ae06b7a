"""The rabbitmq transport; its public name is re-exported by ``flowkit.transports``."""
