"""ETL: a builder diamond with a batch step and a quality gate, over a small built-in data set."""
