"""Exercise checkers: ``qc.checks.check_<name>(your_function)``.

Each checker runs the learner's function on its own inputs, compares it with the package's
reference, prints ``Correct: ...`` or raises ``CheckFailed`` with a message that says what
differs. Checkers live in one module per notebook (``nbNN_slug.py``) and register themselves
with the ``@checker`` decorator; this package exposes every registered checker by name.
"""

from . import (  # noqa: F401  (imported to register their checkers)
    nb00_welcome,
    nb01_number_formats,
    nb02_scale_and_zero_point,
    nb03_symmetric,
    nb04_asymmetric,
    nb05_granularity_and_calibration,
    nb06_bit_widths_and_packing,
    nb07_nonuniform,
    nb08_binary_and_ternary,
    nb09_weights_vs_activations,
    nb13_integer_only,
    nb14_int8_kernels_and_hardware,
    nb15_second_order,
    nb16_stochastic_rounding,
    nb17_gradient_quantization,
    nb18_sparsity_pruning_distillation,
)
from ._core import CHECKERS, CheckFailed

globals().update(CHECKERS)

__all__ = ["CHECKERS", "CheckFailed", *sorted(CHECKERS)]
