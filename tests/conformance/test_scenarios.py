"""The conformance scenarios are well-formed, and compared as README.md says (no Node
needed: these run in every environment).

A scenario that names an unknown step, client or event, uses a connection before dialing
it, or differs for a client without saying why, fails here rather than as a puzzling
mismatch in ``test_conformance``; every step kind is performed by both drivers (the Node
one and the Python one).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.conformance.conformance import (
    ALL_CLIENTS,
    DRIVERS,
    FAMILIES,
    NEFFOS_JS,
    PYTHON,
    SCENARIOS,
    WSMVC_JS_BUILTIN,
    expectation,
    mismatches,
)

# Step kind -> (required keys, optional keys), besides "do", "expect" and "differs".
STEPS: dict[str, tuple[set[str], set[str]]] = {
    "dial": ({"conn"}, {"reconnect", "query", "answers"}),
    "connect": ({"conn", "ns"}, set()),
    "disconnect": ({"conn"}, {"ns"}),
    "join": ({"conn", "room"}, {"ns"}),
    "leave": ({"conn", "room"}, {"ns"}),
    "leave_all": ({"conn"}, {"ns"}),
    "emit": ({"conn", "event", "body"}, {"ns", "room"}),
    "ask": ({"conn", "event", "body"}, {"ns", "timeout_ms"}),
    "ask_begin": ({"id", "conn", "event", "body"}, {"ns", "timeout_ms"}),
    "ask_end": ({"id"}, {"wait_ms"}),
    "ask_all": ({"conn", "event", "bodies"}, {"ns"}),
    "sync": ({"conn"}, set()),
    "next_event": ({"conn", "event"}, set()),
    "pending_events": ({"conn", "event"}, set()),
    "state": ({"conn"}, set()),
    "closed": ({"conn"}, set()),
    "restored": ({"conn"}, {"wait_ms"}),
    "close": ({"conn"}, set()),
    "ids_distinct": ({"conns"}, set()),
    "harness": ({"action"}, {"within_ms"}),
}
HARNESS_ACTIONS = {"stop_server", "start_server", "restart_server"}
CLIENT_KEYS = FAMILIES | {client.name for client in ALL_CLIENTS}
SCENARIO_KEYS = {"name", "proves", "steps", "own_server", "xfail", "stray"}
NAME = re.compile(r"[a-z][a-z0-9_]*")


def check_differs(where: str, differs: Any) -> None:
    assert isinstance(differs, dict), where
    for key, entry in differs.items():
        assert key in CLIENT_KEYS, f"{where}: unknown client {key!r}"
        assert set(entry) == {"expect", "why"}, f"{where} {key}: wants expect and why"
        assert isinstance(entry["why"], str) and entry["why"].strip(), f"{where} {key}: why"


@pytest.mark.parametrize("scenario", SCENARIOS["scenarios"], ids=lambda s: s["name"])
def test_scenario_is_well_formed(scenario: dict[str, Any]) -> None:
    """Known keys and steps; a reason wherever a client differs or is expected to fail;
    connections dialed, asks begun and events recorded before a step looks at them; the
    harness only stops a server of the scenario's own."""
    name = scenario["name"]
    assert NAME.fullmatch(name), name
    assert set(scenario) <= SCENARIO_KEYS, set(scenario) - SCENARIO_KEYS
    assert scenario["proves"].strip()
    for key, reason in scenario.get("xfail", {}).items():
        assert key in CLIENT_KEYS and reason.strip(), f"xfail {key!r}: a known client, a reason"
    stray = scenario.get("stray", {})
    assert set(stray) <= {"expect", "differs"}
    check_differs(f"{name} stray", stray.get("differs", {}))
    dialed: dict[str, set[str]] = {}  # conn -> the events its handlers record
    begun: set[str] = set()
    recorded = set(SCENARIOS["recorded_events"])
    for index, step in enumerate(scenario["steps"]):
        where = f"{name} step {index}"
        kind = step["do"]
        assert kind in STEPS, f"{where}: unknown step {kind!r}"
        required, optional = STEPS[kind]
        keys = set(step) - {"do", "expect", "differs"}
        assert required <= keys, f"{where}: missing {required - keys}"
        assert keys <= required | optional, f"{where}: unknown {keys - required - optional}"
        check_differs(where, step.get("differs", {}))
        if "ns" in step:
            assert step["ns"] in SCENARIOS["namespaces"], f"{where}: undeclared namespace"
        for conn in step.get("conns", [step["conn"]] if "conn" in step else []):
            assert kind == "dial" or conn in dialed, f"{where}: {conn} used before its dial"
        if kind == "dial":
            dialed[step["conn"]] = recorded | set(step.get("answers", {}))
        if kind in ("next_event", "pending_events"):
            assert step["event"] in dialed[step["conn"]], f"{where}: {step['event']} not recorded"
        if kind == "ask_begin":
            begun.add(step["id"])
        if kind == "ask_end":
            assert step["id"] in begun, f"{where}: ask_end of an ask not begun"
        if kind == "harness":
            assert step["action"] in HARNESS_ACTIONS, where
            assert scenario.get("own_server"), f"{where}: the harness stops only an own server"


def test_scenario_names_are_unique() -> None:
    names = [scenario["name"] for scenario in SCENARIOS["scenarios"]]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("kind", sorted(STEPS))
def test_every_step_kind_is_performed_by_both_drivers(kind: str) -> None:
    """The Node drivers share common.mjs's table of steps; the Python driver dispatches on
    the kind: a step added to the data, but to one driver only, fails here."""
    node = (DRIVERS / "common.mjs").read_text("utf-8")
    python = (DRIVERS / "python_driver.py").read_text("utf-8")
    assert re.search(rf"^\s+{kind}: ", node, re.MULTILINE), f"common.mjs has no {kind}"
    assert f'do == "{kind}"' in python, f"python_driver.py has no {kind}"


def test_a_client_takes_its_own_entry_over_its_familys() -> None:
    step = {
        "expect": {"ok": 1},
        "differs": {
            "wsmvc.js": {"expect": {"ok": 2}, "why": "family"},
            "wsmvc.js-builtin": {"expect": {"ok": 3}, "why": "variant"},
        },
    }
    assert expectation(step, PYTHON) == ({"ok": 1}, None)
    assert expectation(step, NEFFOS_JS) == ({"ok": 1}, None)
    assert expectation(step, WSMVC_JS_BUILTIN) == ({"ok": 3}, "variant")
    assert expectation({}, PYTHON) == ({"ok": {"$any": True}}, None)


@pytest.mark.parametrize(
    ("expected", "observed", "matches"),
    [
        ({"ok": {"body": "x"}}, {"ok": {"body": "x", "room": ""}}, True),  # other keys ignored
        ({"ok": {"body": "x"}}, {"ok": {"body": "y"}}, False),
        ({"ok": {"body": "x"}}, {"fail": "event", "text": "x"}, False),
        ({"ok": None}, {"ok": None}, True),
        ({"ok": None}, {"pending": True}, False),
        ({"ok": ["a", "b"]}, {"ok": ["a", "b"]}, True),
        ({"ok": ["a"]}, {"ok": ["a", "b"]}, False),  # lists: as many items
        ({"ok": [{"room": "r"}]}, {"ok": [{"room": "r", "body": "x"}]}, True),
        ({"ok": True}, {"ok": 1}, False),  # JSON types differ
        ({"ok": 4001}, {"ok": 4001.0}, False),
        ({"ok": {"$any": True}}, {"ok": None}, True),
        ({"ok": {"$any": True}}, {"fail": "closed"}, False),
        ({"id": {"$re": ".+"}}, {"id": "abc"}, True),
        ({"id": {"$re": ".+"}}, {"id": ""}, False),
        ({"id": {"$re": ".+"}}, {"id": 7}, False),
    ],
)
def test_observations_are_compared_as_the_readme_says(
    expected: Any, observed: Any, matches: bool
) -> None:
    assert (mismatches(expected, observed) == []) is matches
