"""Written once, at commit 97c1382 (before the layout change), to make the format 1/2 fixture files.

Kept for the record; not run by the tests. Run from the repository root."""
import json, numpy as np, jax, jax.numpy as jnp, pymc as pm
import pymc_sbi as ps
with pm.Model() as prior:
    pm.Normal("mu", 0, 1); pm.HalfNormal("sigma", 1)
def sim(key, theta):
    return theta[0] + theta[1] * jax.random.normal(key, (2,))
sims = ps.simulate(prior, sim, n=400, seed=0)
out = {}
est = ps.fit(ps.nle(ps.nn.maf(num_transforms=2, hidden_features=8)), sims, seed=1, max_epochs=3, progress=False)
ens = ps.fit_ensemble(ps.npe(ps.nn.maf(num_transforms=2, hidden_features=8)), sims, members=2, seed=2, max_epochs=3, progress=False)
theta = np.array([[0.3, 0.8], [-0.5, 1.5]]); x = np.array([[0.1, 0.4], [-1.0, 2.0]])
est.save("tests/data/estimators/format1_nle_maf.safetensors")
ens.save("tests/data/estimators/format2_npe_ensemble.safetensors")
out["format1_nle_maf"] = {"theta": theta.tolist(), "x": x.tolist(), "log_prob": np.asarray(est.log_prob(x, theta)).tolist()}
out["format2_npe_ensemble"] = {"theta": theta.tolist(), "x": x.tolist(), "log_prob": np.asarray(ens.log_prob(x, theta)).tolist()}
json.dump(out, open("tests/data/estimators/expected.json", "w"), indent=1)
print(out)
