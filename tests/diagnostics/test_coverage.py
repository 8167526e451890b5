"""Expected coverage (HPD) and TARP with known answers, the plots and the one-call report."""

import matplotlib
import numpy as np
import pytest
from exact_lg import analytic_sbc_draws
from mcse import assert_prob_within_mcse
from scipy import stats

from pymc_sbi.benchmarks import linear_gaussian
from pymc_sbi.diagnostics import (
    coverage_curve,
    diagnose,
    expected_coverage,
    hpd_levels,
    plot_coverage,
    plot_sbc_ecdf,
    save_figure,
    sbc_from_samples,
    tarp,
)
from pymc_sbi.diagnostics.report import _coverage_row

matplotlib.use("Agg")

N, L = 300, 200


def _result(seed, **kwargs):
    theta, _, draws, lt, ls = analytic_sbc_draws(N, L, seed=seed, **kwargs)
    return sbc_from_samples(theta, draws, log_density_true=lt, log_density_samples=ls)


def test_hpd_levels_by_hand():
    ls = np.array([[0.0, 1.0, 2.0, 3.0], [5.0, 5.0, 5.0, 5.0]])
    lt = np.array([1.5, 6.0])  # 2 of 4 denser; none denser
    np.testing.assert_allclose(hpd_levels(ls, lt), [(2 + 0.5) / 5, 0.5 / 5])


def test_coverage_curve_is_the_ecdf_with_a_band():
    rng = np.random.default_rng(0)
    f = rng.uniform(size=500)
    c = coverage_curve(f, levels=[0.0, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(c.coverage, [0.0, np.mean(f <= 0.25), np.mean(f <= 0.5), 1.0])
    # The simultaneous 95% band is wider than the pointwise binomial 95% interval
    # (+-1.96 sqrt(a(1-a)/n)) and contains it at 0.5.
    half = 1.96 * np.sqrt(0.25 / 500)
    assert c.lower[2] < 0.5 - half and c.upper[2] > 0.5 + half
    assert c.lower[0] == 0.0 and c.upper[-1] == 1.0
    with pytest.raises(ValueError, match=r"\(N,\) array of levels"):
        coverage_curve(np.array([0.5, 1.5]))


def test_exact_posterior_coverage_is_diagonal():
    exact = _result(0)
    c = expected_coverage(exact)
    # Under calibration C(a) - a has sd sqrt(a(1-a)/N) <= 0.029; the whole curve
    # stays within the simultaneous band (95%: this fixed seed is one such draw).
    assert c.inside_band and c.max_error < 0.1
    assert abs(c.area) < 0.03  # mean of C(a) - a: sd ~ 0.017 at N = 300
    t = tarp(exact.theta_true, exact.posterior_samples)
    assert t.inside_band and t.max_error < 0.1


def test_overconfident_posterior_fails_coverage():
    over = _result(1, scale=0.5)
    c = expected_coverage(over)
    assert not c.inside_band and c.area < -0.15  # coverage well below the diagonal
    # At the 90% level a half-width posterior covers theta* only P(chi2_2 < 4.6 / 4)
    # = 1 - exp(-0.58) = 0.44 of the time: a frequency over the N datasets.
    p_cover = stats.chi2(2).cdf(stats.chi2(2).ppf(0.9) / 4)
    assert_prob_within_mcse(np.interp(0.9, c.levels, c.coverage) * N, N, p_cover)
    t = tarp(over.theta_true, over.posterior_samples)
    assert not t.inside_band
    row = _coverage_row("HPD", c)
    assert row["verdict"] == "FAIL (over-confident)"
    under = expected_coverage(_result(2, scale=1.6))
    assert _coverage_row("HPD", under)["verdict"] == "FAIL (under-confident)"


def test_expected_coverage_needs_log_densities():
    theta, _, draws, _, _ = analytic_sbc_draws(10, 5, seed=3)
    with pytest.raises(ValueError, match="log densities"):
        expected_coverage(sbc_from_samples(theta, draws))
    with pytest.raises(ValueError, match="references must have shape"):
        tarp(theta, draws, references=np.zeros((3, 2)))


def test_plots_save_small_pngs(tmp_path):
    res = _result(4, scale=0.7)
    axes = plot_sbc_ecdf(res)
    assert len(axes) == 2 and axes[0].get_title() == "theta[0]"
    # the band is drawn: a filled polygon per panel
    assert all(len(ax.collections) >= 1 for ax in axes)
    save_figure(axes, tmp_path / "ecdf.png")
    pc = plot_sbc_ecdf(res, method="pot_c")
    save_figure(pc, tmp_path / "ecdf_pot.png")
    ax = plot_coverage(expected_coverage(res), tarp(res.theta_true, res.posterior_samples))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["calibrated", "HPD", "TARP"]
    save_figure(ax, tmp_path / "coverage.png")
    for name in ("ecdf.png", "ecdf_pot.png", "coverage.png"):
        path = tmp_path / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size < 150_000


def test_diagnose_npe_report(lg_npe_small, tmp_path, capsys):
    x_obs = linear_gaussian.observation(1)
    reference = linear_gaussian.reference_samples(1)[:2000]
    report = diagnose(
        lg_npe_small,
        linear_gaussian.prior_model(),
        linear_gaussian.simulator,
        num_datasets=100,
        num_posterior_samples=100,
        references=[(x_obs, reference)],
        figures_dir=tmp_path / "figs",
        progressbar=False,
        c2st_kwargs={"classifier": "fast"},
    )
    printed = capsys.readouterr().out
    checks = [r["check"] for r in report.verdicts]
    assert checks == [
        "SBC ranks (pot_c)",
        "SBC ranks (chi2)",
        "HPD expected coverage",
        "TARP",
        "C2ST vs reference, observation 0",
    ]
    assert "| check | statistic |" in printed and "TARP" in printed
    assert 0.4 < report.c2st[0] < 0.7  # a small NPE near the exact posterior
    assert [p.name for p in report.figures] == ["sbc_ecdf.png", "coverage.png"]
    assert all(p.stat().st_size > 1000 for p in report.figures)
    assert report.passed == all(r["verdict"] == "pass" for r in report.verdicts)
