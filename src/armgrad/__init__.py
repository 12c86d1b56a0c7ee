"""armgrad: unbiased, low-variance gradients for binary stochastic units (ARM and its family).

Public contract (docs/design.md section 2):

- :func:`estimate` ``(f, logits, estimator="arm", num_samples=2, *, generator=None, **options)``
- :func:`grad`, the estimate of ``d E[f] / d logits`` itself;
- :func:`exact`, ``(value, grad)`` by enumeration;
- :data:`ESTIMATORS`, name -> estimator (unbiased?, cost in f evaluations, noise shape);
- :mod:`multisample`: the K-sample importance-weighted bound and its estimators (VIMCO, local DisARM);
- :mod:`categorical`: the same for categorical variables (ARSM, categorical DisARM, CARMS, ...).
"""

from . import categorical, multisample
from .api import estimate, exact, grad
from .estimators import ESTIMATORS

__all__ = ["ESTIMATORS", "categorical", "estimate", "exact", "grad", "multisample"]
__version__ = "0.1.0"
