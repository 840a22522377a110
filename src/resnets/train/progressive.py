"""Progressive resizing: the training resolution as a function of the epoch, FFCV's ``get_resolution``.

Low resolution early (cheap steps), rising linearly from ``min_res`` at ``start_ramp`` to ``max_res`` at
``end_ramp`` in multiples of ``res_step`` (FFCV's 32). Evaluation keeps its own fixed size
(``val_crop_size``): training below the test resolution is the "FixRes" effect the train/test split exploits.
"""

from __future__ import annotations

from ..errors import BadInput


def resolution(epoch: int, min_res: int, max_res: int, start_ramp: int, end_ramp: int, res_step: int = 32) -> int:
    """The training side for 0-based ``epoch``."""
    if not 0 < min_res <= max_res:
        raise BadInput(f"progressive resizing needs 0 < min_res <= max_res, got min_res={min_res}, max_res={max_res}")
    if not 0 < res_step <= min_res:
        raise BadInput(f"res_step ({res_step}) must be a positive side no larger than min_res ({min_res})")
    if end_ramp < start_ramp:
        raise BadInput(f"end_ramp ({end_ramp}) must not come before start_ramp ({start_ramp})")
    if epoch <= start_ramp:
        return min_res
    if epoch >= end_ramp:
        return max_res
    interp = min_res + (max_res - min_res) * (epoch - start_ramp) / (end_ramp - start_ramp)
    return int(round(interp / res_step)) * res_step
