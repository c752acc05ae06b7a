"""``python -m examples.agent``: the review loop in-memory; this script plays the reviewer."""

from __future__ import annotations

import anyio

import flowkit

from .flows import REVIEWS, assistant


async def main() -> flowkit.RunResult:
    rt = flowkit.Runtime()
    result = await rt.run(assistant, question="Which message broker should we use?")
    reviews = list(REVIEWS)
    while "review" in result.waiting_for:
        review = reviews.pop(0)
        print(f"draft: {result.state['draft']}\n  review: {review}")
        result = await rt.signal(result.run_id, "review", review)
    print(f"\n{result.status}: {result.output}")
    return result


if __name__ == "__main__":
    anyio.run(main)
