"""The ARC evaluation harness behind ``python -m efe_ray.evaluate``.

Modules (each usable on its own; only ``predict`` and ``model`` import torch, only ``runner``
imports Ray, lazily where it can):

* :mod:`~efe_ray.evaluation.voting` -- undo augmentations and vote for two attempts;
* :mod:`~efe_ray.evaluation.scoring` -- exact-grid task/output scores, cell accuracy, size floor;
* :mod:`~efe_ray.evaluation.submission` -- build, validate and write ``submission.json``;
* :mod:`~efe_ray.evaluation.baselines` -- ``copy_input`` and ``demo_rule``;
* :mod:`~efe_ray.evaluation.leakage` -- tasks a checkpoint was trained on (by id or pair set);
* :mod:`~efe_ray.evaluation.predict` -- a learner's predictions, held-out scores, test-time adaptation;
* :mod:`~efe_ray.evaluation.model` -- the checkpoint predictor (adaptation, augmentations, vote);
* :mod:`~efe_ray.evaluation.runner` -- run a predictor serially or as Ray tasks;
* :mod:`~efe_ray.evaluation.resolve` -- pick the checkpoint of an experiment folder;
* :mod:`~efe_ray.evaluation.report` -- the table, ``per_task.csv`` and report data.
"""
