"""The README documents every environment variable the worker reads (the table is the contract)."""

from __future__ import annotations

from conftest import ROOT

from worker.config.variables import VARIABLES


def test_every_variable_is_in_the_readme_configuration_table():
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Configuration") :]
    table = table[: table.index("\n## ")]
    missing = [var.name for var in VARIABLES if f"| `{var.name}` |" not in table]
    assert missing == []


def test_every_run_time_variable_is_named_in_the_readme():
    from worker.config.runtime import RUNTIME_VARIABLES

    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Changing settings at run time") :]
    section = section[: section.index("\n## ")]
    for name in RUNTIME_VARIABLES:
        assert name in section or f"{name[:-1]}(S)" in section, name
