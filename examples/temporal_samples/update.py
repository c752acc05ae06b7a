"""Update: change a run's language and get the previous one back; a validator refuses
languages the flow cannot greet in.

Mirrors Temporal's ``hello_update`` (an update whose handler changes the workflow's
state and returns a value), with a validator added, as Temporal's
``@<update>.validator`` adds one. A flowkit update is a signal that answers: it is
delivered to the flow's ``flow.wait("set_language")``; its validator runs on the
run's variables before anything is recorded (a refusal is ``flowkit.UpdateRejected``),
and its reply is computed from the variables once the flow has taken it. Temporal
runs the handler inside the workflow; here the flow body does the work and the
reply function reads the result. ``get_language`` is a query; ``approve`` a plain
signal.
"""

from __future__ import annotations

from typing import Any

import flowkit
from flowkit import flow, node
from flowkit.testing import at, simulate

from ._support import RESULT_TIMEOUT, Api, output

GREETINGS = {"english": "Hello", "chinese": "Ni hao", "french": "Bonjour"}


@node
async def greet(language: str, name: str) -> str:
    return f"{GREETINGS[language]}, {name}!"


@flow
async def greeting_with_update(name: str) -> str:
    language = "english"
    previous = None
    while True:
        choice = await flow.first(flow.wait("set_language"), flow.wait("approve"))
        if choice is None:  # approve carries no language
            break
        previous = language  # noqa: F841 - a run variable: set_language's reply reads it
        language = choice
    return await greet(language, name)


def supported(vars: dict[str, Any], language: str) -> None:
    """Refuse a language there is no greeting for: nothing is recorded."""
    if language not in GREETINGS:
        raise ValueError(f"{language!r} is not supported")


@greeting_with_update.update(validator=supported)
def set_language(vars: dict[str, Any], language: str) -> str:
    """The reply: the language the run used before this update."""
    return str(vars["previous"])


@greeting_with_update.query
def get_language(vars: dict[str, Any]) -> str:
    return str(vars["language"])


FLOWS = [greeting_with_update]


async def demo(api: Api) -> dict[str, Any]:
    """Switch to Chinese, try Klingon (refused), query, approve."""
    handle = await api.start(greeting_with_update, run_id="update-1", name="World")
    previous = await api.update(handle.run_id, "set_language", "chinese", timeout=RESULT_TIMEOUT)
    try:
        await api.update(handle.run_id, "set_language", "klingon", timeout=RESULT_TIMEOUT)
        refused = None
    except flowkit.UpdateRejected as exc:
        refused = exc.reason
    language = await api.query(handle.run_id, "get_language")
    await api.signal(handle.run_id, "approve")
    done = await handle.result(timeout=RESULT_TIMEOUT)
    return {"previous": previous, "refused": refused, "language": language, "output": output(done)}


def simulated() -> dict[str, Any]:
    """The updates go as soon as the wait is open; the approval a minute later."""
    sim = simulate(
        greeting_with_update,
        name="World",
        updates={"set_language": ["chinese", "klingon"]},
        signals={"approve": at("1m", None)},
    )
    first, second = sim.updates
    return {
        "previous": first.reply,
        "refused": getattr(second.error, "reason", None),
        "language": sim.query("get_language"),
        "output": sim.output,
    }


EXPECTED = {
    "previous": "english",
    "refused": "'klingon' is not supported",
    "language": "chinese",
    "output": "Ni hao, World!",
}
