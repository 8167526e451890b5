r"""One call that runs the calibration checks of an estimator and prints a verdict table.

:func:`diagnose` runs, with a progress bar over the checks:

1. **SBC** (:func:`~pymc_sbi.diagnostics.run_sbc`) with vectorised inference,
   and per-parameter rank uniformity tests (arviz-stats ``pot_c`` and a
   :math:`\chi^2` histogram test), Bonferroni-corrected over parameters;
2. **HPD expected coverage** from the same SBC run;
3. **TARP** from the same SBC run;
4. **C2ST** against reference posterior samples, for each given observation
   (optional: needs references, e.g. an analytic posterior or a long run of a
   trusted sampler);

prints a table of statistic, threshold and verdict per check, and saves the
figures (SBC rank ECDFs with simultaneous bands, coverage curves) if a folder
is given.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from pymc_sbi.diagnostics.c2st import c2st, samples_matrix
from pymc_sbi.diagnostics.coverage import CoverageCurve, expected_coverage, tarp
from pymc_sbi.diagnostics.inference import posterior_draws
from pymc_sbi.diagnostics.plots import plot_coverage, plot_sbc_ecdf, save_figure
from pymc_sbi.diagnostics.sbc import SBCResult, run_sbc, uniformity

__all__ = ["DiagnosticReport", "diagnose", "format_verdicts"]

C2ST_THRESHOLD = 0.6  # sbibm-style "good" accuracy; 0.5 is indistinguishable


class DiagnosticReport(NamedTuple):
    """Everything :func:`diagnose` computed.

    Attributes
    ----------
    verdicts
        Rows ``{"check", "statistic", "value", "threshold", "verdict"}``.
    sbc
        The :class:`~pymc_sbi.diagnostics.SBCResult`.
    uniformity
        ``{"pot_c": (d,), "chi2": (d,)}`` p-values.
    coverage, tarp
        :class:`~pymc_sbi.diagnostics.CoverageCurve` objects.
    c2st
        ``{observation index: accuracy}`` (empty without references).
    figures
        Paths of the saved figures.
    timings
        Seconds per step.
    """

    verdicts: list[dict[str, Any]]
    sbc: SBCResult
    uniformity: dict[str, np.ndarray]
    coverage: CoverageCurve
    tarp: CoverageCurve
    c2st: dict[int, float]
    figures: list[Path]
    timings: dict[str, float]

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return all(row["verdict"] == "pass" for row in self.verdicts)

    def __str__(self) -> str:
        return format_verdicts(self.verdicts)


def format_verdicts(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of verdict rows."""
    cols = ("check", "statistic", "value", "threshold", "verdict")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        value = r["value"]
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        lines.append(
            f"| {r['check']} | {r['statistic']} | {shown} | {r['threshold']} | {r['verdict']} |"
        )
    return "\n".join(lines)


def _coverage_row(name: str, curve: CoverageCurve) -> dict[str, Any]:
    if curve.inside_band:
        verdict = "pass"
    else:
        verdict = "FAIL (over-confident)" if curve.area < 0 else "FAIL (under-confident)"
    return {
        "check": name,
        "statistic": "max abs(coverage - level)",
        "value": curve.max_error,
        "threshold": f"inside {int(100 * curve.band_prob)}% simultaneous band",
        "verdict": verdict,
    }


def diagnose(
    estimator,
    prior,
    simulator: Callable,
    *,
    num_datasets: int = 200,
    num_posterior_samples: int = 500,
    references: Sequence[tuple[Any, Any]] | None = None,
    alpha: float = 0.01,
    figures_dir: str | Path | None = None,
    seed: int = 0,
    progressbar: bool = True,
    verbose: bool = True,
    c2st_kwargs: dict[str, Any] | None = None,
    **sbc_kwargs: Any,
) -> DiagnosticReport:
    r"""Run SBC, expected coverage, TARP and (optionally) C2ST; print a verdict table.

    Parameters
    ----------
    estimator
        A trained NPE, NLE, MNLE or NRE :class:`~pymc_sbi.Estimator`.
    prior
        The prior ``pm.Model`` whose free variables are the estimator's parameters.
    simulator
        ``(rng_key, theta) -> x`` in JAX.
    num_datasets, num_posterior_samples
        SBC size :math:`N` and posterior draws per dataset :math:`L`.
    references
        Optional ``[(x_obs, reference_samples), ...]``: for each, draw as many
        samples of the estimator's posterior as there are references (as in
        SBC) and compute C2ST against the ``(n, d)`` reference samples (or a
        DataTree with the estimator's variable names).
    alpha
        Level of each check: the rank uniformity tests are Bonferroni-corrected
        over the ``d`` parameters (each p-value is compared with
        ``alpha / d``), and the coverage and TARP curves must stay in their
        ``1 - alpha`` simultaneous bands. Four checks at ``alpha = 0.01`` give
        a calibrated estimator a false alarm about 4% of the time.
    figures_dir
        Folder for ``sbc_ecdf.png`` and ``coverage.png`` (created if needed).
    seed
        Same seed, same report.
    progressbar
        Progress bar over the checks (and the sampler's own bars).
    verbose
        Print the verdict table.
    c2st_kwargs
        Passed to :func:`~pymc_sbi.diagnostics.c2st` (e.g.
        ``{"classifier": "fast"}``).
    sbc_kwargs
        Passed to :func:`~pymc_sbi.diagnostics.run_sbc` (``chains``,
        ``num_warmup``, ``num_trials``, ...).

    Returns
    -------
    DiagnosticReport
        ``str(report)`` is the verdict table; ``report.passed`` says whether
        every check passed.
    """
    from tqdm.auto import tqdm

    references = list(references or [])
    steps = ["SBC", "coverage", "TARP"] + [f"C2ST {i}" for i in range(len(references))]
    steps += ["figures"] if figures_dir is not None else []
    bar = tqdm(total=len(steps), desc="diagnose", disable=not progressbar)
    timings: dict[str, float] = {}

    def step(name: str):
        bar.set_postfix_str(name)
        return time.perf_counter()

    t = step("SBC")
    sbc = run_sbc(
        estimator,
        prior,
        simulator,
        num_datasets=num_datasets,
        num_posterior_samples=num_posterior_samples,
        seed=seed,
        **sbc_kwargs,
    )
    tests = uniformity(sbc)
    timings["sbc_s"] = time.perf_counter() - t
    bar.update()
    d = sbc.ranks.shape[1]
    rows = []
    for name, p in tests.items():
        worst = int(np.argmin(p))
        rows.append(
            {
                "check": f"SBC ranks ({name})",
                "statistic": f"min p-value ({sbc.labels[worst]})",
                "value": float(p[worst]),
                "threshold": f"> {alpha:g} / {d}",
                "verdict": "pass" if p[worst] > alpha / d else "FAIL (ranks not uniform)",
            }
        )

    t = step("coverage")
    cov = expected_coverage(sbc, seed=seed, band_prob=1 - alpha)
    rows.append(_coverage_row("HPD expected coverage", cov))
    timings["coverage_s"] = time.perf_counter() - t
    bar.update()

    t = step("TARP")
    tarp_curve = tarp(sbc.theta_true, sbc.posterior_samples, seed=seed, band_prob=1 - alpha)
    rows.append(_coverage_row("TARP", tarp_curve))
    timings["tarp_s"] = time.perf_counter() - t
    bar.update()

    scores: dict[int, float] = {}
    for i, (x_obs, ref) in enumerate(references):
        t = step(f"C2ST {i}")
        x_b = np.asarray(x_obs)[None]
        mcmc = {k: v for k, v in sbc_kwargs.items() if k in ("chains", "num_warmup", "kernel")}
        ref = (
            samples_matrix(ref, list(estimator.spec.names), name="reference samples")
            if (not isinstance(ref, np.ndarray | list))
            else np.asarray(ref)
        )
        n_ref = ref.shape[0]  # equal set sizes: chance level is 0.5
        samples, _, _ = posterior_draws(estimator, prior, x_b, n_ref, seed=seed + 1 + i, **mcmc)
        scores[i] = c2st(ref, samples[0, :n_ref], seed=seed, **dict(c2st_kwargs or {}))
        rows.append(
            {
                "check": f"C2ST vs reference, observation {i}",
                "statistic": "accuracy",
                "value": scores[i],
                "threshold": f"<= {C2ST_THRESHOLD}",
                "verdict": "pass" if scores[i] <= C2ST_THRESHOLD else "FAIL (distinguishable)",
            }
        )
        timings[f"c2st_{i}_s"] = time.perf_counter() - t
        bar.update()

    figures: list[Path] = []
    if figures_dir is not None:
        t = step("figures")
        folder = Path(figures_dir)
        folder.mkdir(parents=True, exist_ok=True)
        figures = [folder / "sbc_ecdf.png", folder / "coverage.png"]
        save_figure(plot_sbc_ecdf(sbc), figures[0])
        save_figure(plot_coverage(cov, tarp_curve, labels=["HPD", "TARP"]), figures[1])
        timings["figures_s"] = time.perf_counter() - t
        bar.update()
    bar.close()
    report = DiagnosticReport(rows, sbc, tests, cov, tarp_curve, scores, figures, timings)
    if verbose:
        print(str(report))
    return report
