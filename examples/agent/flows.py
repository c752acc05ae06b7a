"""A research assistant that loops until a human approves its draft.

Each round starts the ``research`` subflow (a run of its own: it plans queries
from the question and the reviewer's feedback so far, then searches them in
parallel with ``flow.map``), writes a draft, and waits durably for a human
``review`` signal: ``{"approved": True}`` ends the loop, ``{"approved": False,
"comment": "..."}`` feeds the comment into the next round. The "model" and
"search engine" are deterministic stand-ins, so the example runs offline.

Serve it with ``python -m flowkit.worker --app examples.agent.flows``.
"""

from __future__ import annotations

from typing import Any

from flowkit import flow, node


@node
async def plan_queries(question: str, feedback: list[str]) -> list[str]:
    """What to search for: the question, plus one query per reviewer comment."""
    return [question, *(f"{question} {comment}" for comment in feedback)]


@node(retries=2, timeout="20s")
async def search(query: str) -> str:
    """A stand-in for a search API call (retried on failure like a real one would be)."""
    return f"source about {query!r}"


@node
async def write_draft(question: str, sources: list[str], feedback: list[str]) -> str:
    """A stand-in for a language-model call."""
    addressed = f"; addresses: {', '.join(feedback)}" if feedback else ""
    return f"Answer to {question!r} citing {len(sources)} source(s){addressed}"


@flow
async def research(question: str, feedback: list[str]) -> list[str]:
    queries = await plan_queries(question, feedback)
    sources = await flow.map(search, queries, concurrency=3)
    return sources


@flow
async def assistant(question: str, max_rounds: int = 3) -> dict[str, Any]:
    feedback: list[str] = []
    draft = ""
    for round_no in range(max_rounds):
        sources = await research(question, feedback)  # a subflow: a run of its own
        draft = await write_draft(question, sources, feedback)
        review = await flow.wait("review", timeout="7d")  # a human reads the draft
        if review["approved"]:
            return {"status": "approved", "rounds": round_no + 1, "answer": draft}
        feedback.append(review["comment"])
    return {"status": "gave-up", "rounds": max_rounds, "answer": draft}


# The reviews `__main__` (and the tests) give, in order.
REVIEWS: list[dict[str, Any]] = [
    {"approved": False, "comment": "compare prices"},
    {"approved": False, "comment": "cite a second vendor"},
    {"approved": True},
]
