"""Agent: a draft-review loop with a human in the loop, and a research subflow per round."""
