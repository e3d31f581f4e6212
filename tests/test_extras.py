"""A command whose extra is missing names the extra and exits 2, without a traceback.

A module set to ``None`` in ``sys.modules`` is what Python treats as not importable (``find_spec``
answers None, ``import`` raises ModuleNotFoundError), so the missing extra is real to the code under
test; the fresh-venv test (tests/test_install.py) shows the same with nothing installed.
"""

from __future__ import annotations

import pickle
import sys

import pytest

from mlcost.cli import main
from mlcost.errors import MissingExtra
from mlcost.extras import extra_for, require_extra


def test_require_extra_names_the_extra_and_the_missing_modules(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtra) as raised:
        require_extra("reports", what="mlcost compare")
    assert str(raised.value) == (
        "mlcost compare needs the [reports] extra (matplotlib is not installed): pip install 'mlcost[reports]'"
    )
    assert raised.value.modules == ["matplotlib"] and isinstance(raised.value, ImportError)
    assert str(pickle.loads(pickle.dumps(raised.value))) == str(raised.value)
    require_extra("reports", "json")  # present: nothing raised


def test_extra_for_maps_a_module_to_its_extra():
    assert extra_for("pandas") == "reports"
    assert extra_for("great_expectations.core") == "gx"
    assert extra_for("airflow.sdk") == "airflow"
    assert extra_for("pydantic") is None


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["report"], "reports"),
        (["export", "--focus", "-o", "x.csv"], "reports"),
        (["compare", "--experiment", "e"], "reports"),
        (["gate", "--engine", "gx"], "gx"),
    ],
)
def test_a_command_without_its_extra_exits_2_naming_it(monkeypatch, capsys, tmp_path, argv, extra):
    monkeypatch.setitem(sys.modules, "pandas", None)
    monkeypatch.setitem(sys.modules, "great_expectations", None)
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"pip install 'mlcost[{extra}]'" in err and "Traceback" not in err


def test_an_optional_import_past_the_checks_still_names_its_extra(monkeypatch, capsys):
    """The CLI's safety net: a ModuleNotFoundError of an extra's module becomes the same message."""
    import mlcost.cli as cli

    def needs_pyarrow(_args):
        raise ModuleNotFoundError("No module named 'pyarrow'", name="pyarrow")

    real = cli.build_parser

    def parser():
        p = real()
        p._subparsers._group_actions[0].choices["prices"].set_defaults(func=needs_pyarrow)
        return p

    monkeypatch.setattr(cli, "build_parser", parser)
    assert main(["prices"]) == 2
    assert "pip install 'mlcost[reports]'" in capsys.readouterr().err
