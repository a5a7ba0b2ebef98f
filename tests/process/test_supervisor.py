"""fastgate/process/supervisor.py: what a reload publishes to the workers, and when
(processes, signals and listeners themselves: tests/e2e/test_reload.py and test_process.py)."""

import signal

import pytest

from fastgate.compile.config.load import load_config_text
from fastgate.process import supervisor as supervisor_module
from fastgate.process.supervisor import Supervisor

CONFIG = "listeners:\n  - address: 127.0.0.1:8080\nroutes:\n  - path: /health\n    integration: {type: mock, status: 200}\n"


class Loads:
    """The supervisor's loader: the config text and a state marker to hand out next."""

    def __init__(self):
        self.text, self.state = CONFIG, "state-1"

    def __call__(self):
        loaded = load_config_text(self.text)
        loaded.state = self.state
        return loaded


@pytest.fixture
def sup(tmp_path, monkeypatch):
    loads = Loads()
    s = Supervisor(loads, banner=False)
    s.state_dir = str(tmp_path)
    s.metrics = None
    events = []
    monkeypatch.setattr(supervisor_module, "health_slots", lambda config, metrics: [])
    monkeypatch.setattr(s, "signal_children", lambda sig, workers_sig=None: events.append(("signal", sig)))
    failing = set()

    def check(loaded):
        events.append(("check", loaded.state))
        if loaded.state in failing:
            raise ValueError(f"{loaded.state} does not compile")
    monkeypatch.setattr(s, "check", check)
    s.accept_config(loads())
    return s, loads, events, failing


def test_a_state_change_reaches_the_workers_before_its_check(sup):
    s, loads, events, _ = sup
    loads.state = "state-2"
    s.reload("control API")
    assert events == [("signal", signal.SIGHUP), ("check", "state-2")]
    assert s.accepted_config().state == "state-2"


def test_a_state_that_fails_its_check_is_taken_back(sup):
    s, loads, events, failing = sup
    loads.state = "state-2"
    failing.add("state-2")
    s.reload("control API")
    # the workers were told and fail the same build (they keep what they serve); a worker
    # started after this reads the state that was served before, not the broken one
    assert events == [("signal", signal.SIGHUP), ("check", "state-2")]
    assert s.accepted_config().state == "state-1"
    assert s.accepted.state == "state-1"


def test_a_config_change_is_checked_before_the_workers_hear_of_it(sup):
    s, loads, events, failing = sup
    loads.text = CONFIG.replace("200", "204")
    loads.state = "state-2"
    s.reload("SIGHUP")
    assert events == [("check", "state-2"), ("signal", signal.SIGHUP)]
    events.clear()
    loads.text = CONFIG.replace("200", "202")
    loads.state = "state-3"
    failing.add("state-3")
    s.reload("SIGHUP")
    assert events == [("check", "state-3")]      # refused: the workers never hear of it
    assert s.accepted_config().state == "state-2"
