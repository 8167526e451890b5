"""VI tests run in float64: every pm.Model target turns JAX's x64 on anyway (jax_model)."""

import jax
import pytest


@pytest.fixture(autouse=True, scope="session")
def _x64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)
