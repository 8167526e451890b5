"""Flax (linen) networks: conditional density estimators (MAF, NSF, MDN) and classifiers.

Every network is a ``flax.linen.Module`` dataclass with a ``features`` field
(the data dimension ``d``; 0 until the trainer calls ``module.clone(features=d)``)
and JSON-primitive hyper-parameters, and offers

- ``module.apply(params, x, context)`` → ``log q(x | context)``, shape ``(...,)``;
- ``module.apply(params, rng_key, context, method="sample")`` → ``x``, shape ``(..., d)``.

The ratio-estimation classifiers (:func:`mlp_classifier`, :func:`resnet_classifier`)
instead map ``module.apply(params, theta, x)`` → logit ``log r(x, theta)``, shape ``(...,)``.

Inputs are expected z-scored.  Note that the factories :func:`maf`, :func:`nsf`
and :func:`mdn` shadow the submodules of the same name as attributes of this
package; import classes with ``from pymc_sbi.nn.maf import MAF`` (or from here).
"""

from .classifier import MLPClassifier, ResidualClassifier, mlp_classifier, resnet_classifier
from .embedding import EmbeddedDensity, MLPEmbedding, mlp_embedding
from .made import MADE, MaskedDense
from .maf import MAF, AutoregressiveFlow, maf
from .mdn import MDN, mdn
from .mixed import MixedDensity, mixed_density
from .nsf import NSF, nsf
from .registry import NETWORKS, network_config, network_from_config, register_network
from .splines import rational_quadratic_spline, rational_quadratic_spline_inverse

__all__ = [
    "MADE",
    "MAF",
    "MDN",
    "NETWORKS",
    "NSF",
    "AutoregressiveFlow",
    "EmbeddedDensity",
    "MLPClassifier",
    "MLPEmbedding",
    "MaskedDense",
    "MixedDensity",
    "ResidualClassifier",
    "maf",
    "mdn",
    "mixed_density",
    "mlp_classifier",
    "mlp_embedding",
    "network_config",
    "network_from_config",
    "nsf",
    "rational_quadratic_spline",
    "rational_quadratic_spline_inverse",
    "register_network",
    "resnet_classifier",
]
