"""The import rules of docs/architecture.md hold: layers, no cycles, no private reach-ins."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pymc_sbi as ps

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pymc_sbi"


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


def test_import_linter_contracts_are_kept():
    """Stages import only earlier stages; nn/objectives/estimator import no PyMC; no cycles."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("import-linter is not installed (it is in the test extra: make env)")
    out = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_no_private_name_is_imported_from_another_module():
    bad = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pymc_sbi"):
                bad += [f"{path.relative_to(ROOT)}: {node.module}.{a.name}"
                        for a in node.names if a.name.startswith("_")]  # fmt: skip
    assert not bad, bad


def test_no_function_level_import_of_the_package():
    """Imports of pymc_sbi sit at module level (the CLI benchmarks may import lazily)."""
    bad = []
    for path, tree in _modules():
        if "benchmarks" in path.parts:
            continue
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pymc_sbi"):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}")
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                    if any(n.startswith("pymc_sbi") for n in names):
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {names}")
    assert not bad, bad


def test_top_level_is_small_and_every_name_resolves():
    assert len(ps.__all__) <= 50
    for name in ps.__all__:
        assert getattr(ps, name) is not None, name
    # the one-shot functions are callables; the subpackages are modules
    assert callable(ps.fit) and callable(ps.simulate) and callable(ps.npe)
    assert ps.train.Runner is not None and ps.direct.sample_posterior is ps.sample_posterior
