"""flowkit benchmarks: ``python -m bench [--quick] [--json FILE] [--only NAME]``."""
