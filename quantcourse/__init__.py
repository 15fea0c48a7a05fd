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
from .claims import claim
from .data import corpus, digits_data
from .deploy import (
    QDQDigitsCNN,
    export_digits_onnx,
    onnx_accuracy,
    onnx_op_counts,
    onnx_predict,
    onnx_quant_params,
    onnx_session,
    simulate_qdq,
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
from .hardware import (
    cpu_flags,
    fbgemm_activation_qparams,
    fbgemm_dynamic_linear_model,
    u8s8_has_vnni,
    u8s8_matmul_exact,
    u8s8_matmul_saturating,
    u8s8_saturated_pairs,
)
from .kernels import (
    FbgemmDynamicLinear,
    W4A16Linear,
    W8A8Linear,
    W8A16Linear,
    fbgemm_available,
    int8_matmul,
    int8_matmul_path,
    int8_matmul_reference,
    load_quantized,
    quantize_per_token,
    save_quantized,
    w8a8_linear,
    weight_only_linear,
)
from .metrics import (
    cosine_similarity,
    max_abs_error,
    model_nbytes,
    mse,
    quantized_model_nbytes,
    quantized_nbytes,
    sqnr_db,
    tensor_nbytes,
)
from .models import DigitsCNN, digits_cnn, embedding_fidelity, evaluate_digits, minilm
from .naive import naive_asymmetric_quantize, naive_dequantize, naive_symmetric_quantize
from .observers import (
    EntropyObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    Observer,
    PercentileObserver,
    qparams_from_range,
)
from .packing import pack_bits, packed_nbytes, unpack_bits
from .plotting import plot_error_vs_bits, plot_quant_grid
from .timing import time_median, time_paired

__version__ = "0.1.0"

__all__ = [
    "asymmetric_qparams",
    "checks",
    "claim",
    "compose_float",
    "corpus",
    "cosine_similarity",
    "cpu_flags",
    "decompose_float",
    "dequantize",
    "digits_cnn",
    "digits_data",
    "DigitsCNN",
    "embedding_fidelity",
    "EntropyObserver",
    "environment_report",
    "evaluate_digits",
    "export_digits_onnx",
    "fake_quantize",
    "fbgemm_activation_qparams",
    "fbgemm_available",
    "fbgemm_dynamic_linear_model",
    "FbgemmDynamicLinear",
    "fixed_qparams",
    "float_layout",
    "FLOAT_LAYOUTS",
    "FloatLayout",
    "format_info",
    "from_fixed",
    "int8_matmul",
    "int8_matmul_path",
    "int8_matmul_reference",
    "load_quantized",
    "max_abs_error",
    "minilm",
    "MinMaxObserver",
    "model_nbytes",
    "MovingAverageMinMaxObserver",
    "mse",
    "MSEObserver",
    "naive_asymmetric_quantize",
    "naive_dequantize",
    "naive_symmetric_quantize",
    "Observer",
    "onnx_accuracy",
    "onnx_op_counts",
    "onnx_predict",
    "onnx_quant_params",
    "onnx_session",
    "pack_bits",
    "packed_nbytes",
    "PercentileObserver",
    "plot_error_vs_bits",
    "plot_quant_grid",
    "QDQDigitsCNN",
    "QParams",
    "qparams_from_range",
    "qrange",
    "quantize",
    "quantize_per_token",
    "quantized_model_nbytes",
    "quantized_nbytes",
    "save_quantized",
    "simulate_qdq",
    "sqnr_db",
    "symmetric_qparams",
    "tensor_nbytes",
    "time_median",
    "time_paired",
    "to_fixed",
    "u8s8_has_vnni",
    "u8s8_matmul_exact",
    "u8s8_matmul_saturating",
    "u8s8_saturated_pairs",
    "unpack_bits",
    "W4A16Linear",
    "W8A16Linear",
    "w8a8_linear",
    "W8A8Linear",
    "weight_only_linear",
]
