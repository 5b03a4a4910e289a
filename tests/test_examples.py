"""Tests `../examples/`: each example runs as a user would run it, and does what it says."""

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_custom_objective_is_checked_and_learns():
    out = _load("custom_objective").main(["--quick"])
    assert out["grad_error"] <= 1e-9
    first, last = out["epoch_loss"]
    assert last < 0.9 * first, out["epoch_loss"]
