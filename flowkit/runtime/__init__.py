"""The in-memory shell: runs blueprints as tasks in an anyio task group."""
