"""The sqs transport; its public name is re-exported by ``flowkit.transports``."""
