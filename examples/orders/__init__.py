"""Checkout: an approval wait, a payment webhook, a durable sleep, compensation in ``except``."""
