"""Exercise checkers: ``qc.checks.check_<name>(your_function)``.

Each checker runs the learner's function on its own inputs, compares it with the package's
reference, prints ``Correct: ...`` or raises ``CheckFailed`` with a message that says what
differs. Checkers live in one module per notebook (``nbNN_slug.py``) and register themselves
with the ``@checker`` decorator in ``CHECKERS``; each is imported here by name (a test checks
that these names are exactly the registered ones).
"""

from ._core import CHECKERS, CheckFailed
from .nb00_welcome import check_compression_ratio, check_int8_roundtrip
from .nb01_number_formats import check_float_value, check_to_fixed
from .nb02_scale_and_zero_point import check_affine_qparams, check_dequantize, check_quantize
from .nb03_symmetric import check_levels_used, check_symmetric_quantize, check_symmetric_scale
from .nb04_asymmetric import check_asymmetric_roundtrip, check_zero_point, check_zero_point_matmul
from .nb05_granularity_and_calibration import (
    check_clipping_split,
    check_per_channel_scales,
    check_percentile_range,
)
from .nb06_bit_widths_and_packing import check_pack_nibbles, check_sqnr_rule, check_storage_bytes
from .nb07_nonuniform import check_centroid_grad, check_log_zero_threshold, check_nf_levels
from .nb08_binary_and_ternary import check_binary_dot, check_binary_sqnr, check_optimal_ternary
from .nb09_weights_vs_activations import (
    check_activation_fake_quant,
    check_per_token_qparams,
    check_weight_vs_activation_bytes,
)
from .nb10_post_training_quantization import (
    check_float_layers,
    check_safe_activation_qmax,
    check_weight_sqnr_prediction,
)
from .nb11_quantization_aware_training import (
    check_deploy_conv,
    check_fold_bn,
    check_lsq_asymmetric_grads,
)
from .nb12_mixed_precision import (
    check_allocation_with_floor,
    check_greedy_allocation,
    check_layer_bytes,
)
from .nb13_integer_only import check_int_avg_pool, check_requantize_relu6, check_single_rounding
from .nb14_int8_kernels_and_hardware import (
    check_compute_bound_batch,
    check_energy_estimate,
    check_int8_accumulator_bits,
)
from .nb15_second_order import check_fc1_gptq, check_hutchinson_variance, check_obs_update
from .nb16_stochastic_rounding import check_fp16_stall, check_sr_log2, check_sr_sum_spread
from .nb17_gradient_quantization import (
    check_qsgd_variance,
    check_topk_error_feedback,
    check_wire_bytes,
)
from .nb18_sparsity_pruning_distillation import (
    check_best_index_bits,
    check_nm_metadata_bits,
    check_soft_grad,
)

__all__ = [
    "CHECKERS",
    "CheckFailed",
    "check_activation_fake_quant",
    "check_affine_qparams",
    "check_allocation_with_floor",
    "check_asymmetric_roundtrip",
    "check_best_index_bits",
    "check_binary_dot",
    "check_binary_sqnr",
    "check_centroid_grad",
    "check_clipping_split",
    "check_compression_ratio",
    "check_compute_bound_batch",
    "check_deploy_conv",
    "check_dequantize",
    "check_energy_estimate",
    "check_fc1_gptq",
    "check_float_layers",
    "check_float_value",
    "check_fold_bn",
    "check_fp16_stall",
    "check_greedy_allocation",
    "check_hutchinson_variance",
    "check_int8_accumulator_bits",
    "check_int8_roundtrip",
    "check_int_avg_pool",
    "check_layer_bytes",
    "check_levels_used",
    "check_log_zero_threshold",
    "check_lsq_asymmetric_grads",
    "check_nf_levels",
    "check_nm_metadata_bits",
    "check_obs_update",
    "check_optimal_ternary",
    "check_pack_nibbles",
    "check_per_channel_scales",
    "check_per_token_qparams",
    "check_percentile_range",
    "check_qsgd_variance",
    "check_quantize",
    "check_requantize_relu6",
    "check_safe_activation_qmax",
    "check_single_rounding",
    "check_soft_grad",
    "check_sqnr_rule",
    "check_sr_log2",
    "check_sr_sum_spread",
    "check_storage_bytes",
    "check_symmetric_quantize",
    "check_symmetric_scale",
    "check_to_fixed",
    "check_topk_error_feedback",
    "check_weight_sqnr_prediction",
    "check_weight_vs_activation_bytes",
    "check_wire_bytes",
    "check_zero_point",
    "check_zero_point_matmul",
]
