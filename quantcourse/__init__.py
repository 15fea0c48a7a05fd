"""quantcourse: the kernels behind a hands-on course on neural-network quantization.

Notebooks use only the names listed in ``__all__`` below, e.g.::

    import quantcourse as qc
    qp = qc.symmetric_qparams(w, bits=8)
    w_hat = qc.dequantize(qc.quantize(w, qp), qp)
"""

from . import checks  # checkers look names up at call time, so import order is free
from .affine import (
    QParams,
    asymmetric_qparams,
    dequantize,
    fake_quantize,
    qrange,
    quantize,
    symmetric_qparams,
)
from .env import environment_report
from .formats import (
    FLOAT_LAYOUTS,
    FloatLayout,
    compose_float,
    decompose_float,
    fixed_qparams,
    float_layout,
    format_info,
    from_fixed,
    to_fixed,
)
from .metrics import (
    cosine_similarity,
    max_abs_error,
    model_nbytes,
    mse,
    quantized_nbytes,
    sqnr_db,
    tensor_nbytes,
)
from .naive import naive_asymmetric_quantize, naive_dequantize, naive_symmetric_quantize
from .plotting import plot_error_vs_bits, plot_quant_grid

__version__ = "0.1.0"

__all__ = [
    "FLOAT_LAYOUTS",
    "FloatLayout",
    "QParams",
    "asymmetric_qparams",
    "checks",
    "compose_float",
    "cosine_similarity",
    "decompose_float",
    "dequantize",
    "environment_report",
    "fake_quantize",
    "fixed_qparams",
    "float_layout",
    "format_info",
    "from_fixed",
    "max_abs_error",
    "model_nbytes",
    "mse",
    "naive_asymmetric_quantize",
    "naive_dequantize",
    "naive_symmetric_quantize",
    "plot_error_vs_bits",
    "plot_quant_grid",
    "qrange",
    "quantize",
    "quantized_nbytes",
    "sqnr_db",
    "symmetric_qparams",
    "tensor_nbytes",
    "to_fixed",
]
