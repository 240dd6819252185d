"""TensorBoard for a Tune run: our metrics under namespaced tags, grid pictures, and HParams.

Tune's own TensorBoard logger files every result under ``ray/tune/...``. This one (a drop-in
subclass, so Tune does not add its default) writes the learner's metrics under their own tags
(``losses/efe``, ``charts/mask_ratio``, ``grads/qwen``, ``eval/cell_acc``, ...), the grid
pictures that efe_ray/rl/callbacks.py puts under ``result["images"]`` as images, and leaves
everything else (RLlib's own statistics) under ``ray/tune/...`` as before. The pictures are taken
out of the result so that the JSON and CSV loggers don't store them.

HParams: when a trial ends, Tune records its searched values with the metrics of its last result;
its logger only knows the ``ray/tune/...`` ones. Here the namespaced metrics join them, the search
metric first, so that the HParams tab compares trials on what the search optimises.

Tune offers no public hook for either: as a subclass, this writes through its parent's per-trial
writers (``_trial_writer``) and extends its ``_try_log_hparams``.
"""

from __future__ import annotations

import math

from ray.tune.logger import TBXLoggerCallback

NAMESPACES = ("losses/", "charts/", "grads/", "eval/", "learner/")
"""Result keys with these prefixes are written under their own name."""


class EFETensorBoardCallback(TBXLoggerCallback):
    """Namespaced scalars, grid images and HParams per trial, in the trial's folder."""

    def __init__(self, metric: str = "eval/score") -> None:
        super().__init__()
        self.metric = metric
        self._last: dict = {}  # trial -> {tag: last finite value}

    def log_trial_result(self, iteration: int, trial, result: dict):
        if trial not in self._trial_writer:
            self.log_trial_start(trial)
        writer = self._trial_writer[trial]
        step = result.get("training_iteration", iteration)
        images = result.pop("images", None) or {}
        for tag, picture in images.items():
            writer.add_image(tag, picture, global_step=step, dataformats="HWC")
        rest, ours = {}, {}
        for key, value in result.items():
            if key.startswith(NAMESPACES) and isinstance(value, (int, float)):
                if math.isfinite(value):
                    writer.add_scalar(key, value, global_step=step)
                    ours[key] = value
            else:
                rest[key] = value
        self._last[trial] = ours
        super().log_trial_result(iteration, trial, rest)
        writer.flush()

    def _try_log_hparams(self, trial, result: dict):
        ours = self._last.pop(trial, {})
        first = {self.metric: ours[self.metric]} if self.metric in ours else {}
        super()._try_log_hparams(trial, {**first, **ours, **result})
