"""Same seed, same result: two fresh processes train, save, load and sample bit for bit alike."""

import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = r"""
import sys
import numpy as np
import jax
import pymc as pm
import pymc_sbi as ps

out = sys.argv[1]
with pm.Model() as prior:
    mu = pm.Normal("mu", 0, 1)
    sigma = pm.HalfNormal("sigma", 1)

def simulator(key, theta):
    return theta[0] + theta[1] * jax.random.normal(key, (2,))

sims = ps.simulate(prior, simulator, 600, seed=3, progressbar=False)
est = ps.fit(ps.nle(ps.nn.maf(num_transforms=2, hidden_features=16)), sims,
             ps.TrainConfig(max_epochs=4), seed=4, progressbar=False)
est.save(out + ".safetensors")
loaded = ps.load(out + ".safetensors")
with pm.Model() as model:
    mu = pm.Normal("mu", 0, 1)
    sigma = pm.HalfNormal("sigma", 1)
    ps.NeuralLikelihood("x", loaded, {"mu": mu, "sigma": sigma}, observed=np.ones((5, 2)))
idata = ps.sample(model, kernel="mala", draws=50, tune=50, chains=4, seed=5, progressbar=False)
draws = loaded.sample(jax.random.key(6), np.array([0.3, 0.8]), 100)
np.savez(out + ".npz", theta=sims.theta, x=sims.x, loss=np.array(est.history["val_loss"]),
         mu=idata.posterior["mu"].values, sigma=idata.posterior["sigma"].values,
         draws=np.asarray(draws))
"""


def test_two_fresh_processes_agree_bit_for_bit(tmp_path):
    results = []
    for run in ("a", "b"):
        out = str(tmp_path / run)
        subprocess.run(
            [sys.executable, "-c", SCRIPT, out], check=True, cwd=Path(__file__).parents[1]
        )
        results.append(np.load(out + ".npz"))
    a, b = results
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # the saved files too, byte for byte (the training history holds timings, so compare
    # the tensors: everything but the JSON header)
    from safetensors.numpy import load_file

    fa, fb = (load_file(str(tmp_path / f"{r}.safetensors")) for r in ("a", "b"))
    assert fa.keys() == fb.keys()
    for key in fa:
        np.testing.assert_array_equal(fa[key], fb[key], err_msg=key)
