"""The README's quickstart runs as written and gives a sensible posterior."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def quickstart_code() -> str:
    text = README.read_text()
    section = text.split("## Quickstart", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_quickstart_runs_as_written(tmp_path, monkeypatch, capsys):
    code = quickstart_code()
    assert len(code.strip().splitlines()) <= 30
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert (tmp_path / "quickstart_nle.safetensors").exists()
    post = namespace["idata"].posterior
    # 20 draws with sample mean 0.8 and sample sd 0.5: mu is pinned near 0.8 (sd ~ 0.11),
    # sigma near 0.5; a broken pipeline would return the prior (mu ~ N(0, 1)).
    assert abs(float(post["mu"].mean()) - 0.8) < 0.25
    assert abs(float(post["sigma"].mean()) - 0.52) < 0.15
    assert "mu" in capsys.readouterr().out
    assert np.isfinite(float(post["sigma"].std()))
