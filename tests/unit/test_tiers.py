"""The test tiers keep their promises: a bare ``pytest`` is the fast tier, a ``-m`` on the command line (what
``deploy/test.sh`` passes) replaces the default one, unknown markers are refused, and a warning raised from
Sieve's own modules is an error while one from a third-party module is not."""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

TIERS = """
import pytest

def test_fast(): pass

@pytest.mark.slow
def test_slow(): pass

@pytest.mark.integration
def test_integration(): pass

@pytest.mark.gpu
def test_gpu(): pass
"""


def ini_options() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return dict(tomllib.load(f)["tool"]["pytest"]["ini_options"])


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A project with Sieve's pytest options (addopts, markers) and one test per tier."""
    options = ini_options()
    markers = "\n".join(f"    {m}" for m in options["markers"])
    pytester.makeini(f"[pytest]\naddopts = {options['addopts']}\nmarkers =\n{markers}\n")
    pytester.makepyfile(test_tiers=TIERS)
    return pytester


def test_a_bare_run_is_the_fast_tier(project: pytest.Pytester) -> None:
    result = project.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, deselected=3)


def test_a_command_line_m_replaces_the_default_one(project: pytest.Pytester) -> None:
    script = (ROOT / "deploy" / "test.sh").read_text()
    assert '-m "not gpu"' in script
    everything_but_gpu = project.runpytest_inprocess("-p", "no:cacheprovider", "-m", "not gpu")
    everything_but_gpu.assert_outcomes(passed=3, deselected=1)
    only_slow = project.runpytest_inprocess("-p", "no:cacheprovider", "-m", "slow")
    only_slow.assert_outcomes(passed=1, deselected=3)


def test_an_unknown_marker_is_refused(project: pytest.Pytester) -> None:
    project.makepyfile(test_typo="import pytest\n\n@pytest.mark.integratoin\ndef test_x(): pass\n")
    result = project.runpytest_inprocess("-p", "no:cacheprovider", "test_typo.py")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*'integratoin' not found in `markers` configuration option*"])


@pytest.mark.parametrize("module", ["api.search", "ingestion", "retrieval.backends.qwen3", "engine.engine"])
def test_a_warning_from_a_sieve_module_is_an_error(module: str) -> None:
    with pytest.raises(DeprecationWarning, match="old call"):
        warnings.warn_explicit("old call", DeprecationWarning, f"{module}.py", 1, module=module)


@pytest.mark.parametrize("module", ["apispec", "transformers.modeling_utils", "engineering"])
def test_a_warning_from_another_module_is_not(module: str) -> None:
    with warnings.catch_warnings(record=True) as seen:  # keeps the configured filters, records the rest
        warnings.warn_explicit("old call", DeprecationWarning, f"{module}.py", 1, module=module)
    assert [str(w.message) for w in seen] == ["old call"]
