"""Exercise checkers: ``qc.checks.check_<name>(your_function)``.

Each checker runs the learner's function on its own inputs, compares it with the package's
reference, prints ``Correct: ...`` or raises ``CheckFailed`` with a message that says what
differs. Checkers live in one module per notebook (``nbNN_slug.py``) and register themselves
with the ``@checker`` decorator in ``CHECKERS``; each is imported here by name (a test checks
that these names are exactly the registered ones).
"""

from ._core import CHECKERS, CheckFailed
from .nb00_welcome import (
    check_compression_ratio,
    check_largest_fit,
    check_output_error_bound,
)
from .nb01_number_formats import (
    check_change_q_format,
    check_float_thresholds,
    check_q_format,
)
from .nb02_scale_and_zero_point import check_clip_factor, check_mse_prediction, check_quantize
from .nb03_symmetric import check_levels_prediction, check_weight_range, check_worst_layer
from .nb04_asymmetric import check_asym_weight_layers, check_fold_zero_points, check_sym_vs_asym
from .nb05_granularity_and_calibration import (
    check_flat_group_size,
    check_granularity_budget,
    check_percentile_range,
)
from .nb06_bit_widths_and_packing import check_pack_3bit, check_smallest_bits, check_storage_bytes
from .nb07_nonuniform import check_centroid_grad, check_log_zero_threshold, check_nf_levels
from .nb08_binary_and_ternary import check_binary_dot, check_binary_sqnr, check_optimal_ternary
from .nb09_weights_vs_activations import (
    check_cheaper_scheme,
    check_smooth_outlier,
    check_token_gain,
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
    check_accumulator_bits,
    check_compute_bound_batch,
    check_predicted_speedup,
)
from .nb15_energy_and_deployment import (
    check_cpu_int8_sums,
    check_int8_energy_batch,
    check_onnx_quantize_linear,
)
from .nb16_second_order import check_fc1_gptq, check_hutchinson_variance, check_obs_update
from .nb17_stochastic_rounding import check_fp16_stall, check_sr_log2, check_sr_sum_spread
from .nb18_gradient_quantization import (
    check_qsgd_variance,
    check_topk_error_feedback,
    check_wire_bytes,
)
from .nb19_sparsity_pruning_distillation import (
    check_best_index_bits,
    check_nm_metadata_bits,
    check_soft_grad,
)
from .nb20_capstone import check_nf4_nbytes, check_pick_recipe, check_recipe_point

__all__ = [
    "CHECKERS",
    "CheckFailed",
    "check_accumulator_bits",
    "check_allocation_with_floor",
    "check_asym_weight_layers",
    "check_best_index_bits",
    "check_binary_dot",
    "check_binary_sqnr",
    "check_centroid_grad",
    "check_change_q_format",
    "check_cheaper_scheme",
    "check_clip_factor",
    "check_compression_ratio",
    "check_compute_bound_batch",
    "check_cpu_int8_sums",
    "check_deploy_conv",
    "check_fc1_gptq",
    "check_flat_group_size",
    "check_float_layers",
    "check_float_thresholds",
    "check_fold_bn",
    "check_fold_zero_points",
    "check_fp16_stall",
    "check_granularity_budget",
    "check_greedy_allocation",
    "check_hutchinson_variance",
    "check_int8_energy_batch",
    "check_int_avg_pool",
    "check_largest_fit",
    "check_layer_bytes",
    "check_levels_prediction",
    "check_log_zero_threshold",
    "check_lsq_asymmetric_grads",
    "check_mse_prediction",
    "check_nf4_nbytes",
    "check_nf_levels",
    "check_nm_metadata_bits",
    "check_obs_update",
    "check_onnx_quantize_linear",
    "check_optimal_ternary",
    "check_output_error_bound",
    "check_pack_3bit",
    "check_percentile_range",
    "check_pick_recipe",
    "check_predicted_speedup",
    "check_q_format",
    "check_qsgd_variance",
    "check_quantize",
    "check_recipe_point",
    "check_requantize_relu6",
    "check_safe_activation_qmax",
    "check_single_rounding",
    "check_smallest_bits",
    "check_smooth_outlier",
    "check_soft_grad",
    "check_sr_log2",
    "check_sr_sum_spread",
    "check_storage_bytes",
    "check_sym_vs_asym",
    "check_token_gain",
    "check_topk_error_feedback",
    "check_weight_range",
    "check_weight_sqnr_prediction",
    "check_wire_bytes",
    "check_worst_layer",
]
