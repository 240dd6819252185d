"""What became of a search and its trials: the summary it ends with, and its exit status.

Each trial is read from Tune's ``ResultGrid`` (public fields only):

- **failed**: it has an error (Tune's ``Result.error``); the summary shows its root cause
  (efe_ray/rl/faults.py);
- **finished**: its last result is final (``done``) at ``tune.iterations``;
- **stopped early**: final before that (ASHA stopped it);
- **unfinished**: no final result: the search was interrupted, ran out of time, or never started it.
  ``--resume`` continues these from their latest checkpoints.

Exit status (:data:`EXIT_CODES`): 130 when the search was interrupted (Ctrl-C), else 1 when a
trial failed, else 124 when the time budget left trials unfinished, else 0.

The best trial is the one ``python -m efe_ray.evaluate --checkpoint <experiment>`` scores
(efe_ray/evaluation/resolve.py): the highest *last* reported value of the search metric (ties to
the trial whose folder sorts first), with its latest checkpoint; the summary prints that trial's
last figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from efe_ray.config import TuneConfig
from efe_ray.evaluation.resolve import RESULT_FILE, finite_number, highest, last_metric
from efe_ray.rl.faults import is_retryable, root_cause

EXIT_CODES = {"finished": 0, "failed": 1, "time budget": 124, "interrupted": 130}
"""Exit status: ``interrupted`` wins, then ``failed`` (some trial failed), then ``time budget``."""


@dataclass
class TrialOutcome:
    """One trial at the end of a search."""

    name: str
    """Trial folder name."""
    status: str
    """"finished", "stopped early", "failed" or "unfinished"."""
    iteration: int
    """Last training iteration it reported (0: none)."""
    error: str = ""
    """Root cause of a failure ("Type: message")."""
    retryable: bool = True
    """False when retrying cannot fix the failure (it was not retried)."""


@dataclass
class SearchOutcome:
    """A search's trials and how it ended."""

    trials: list[TrialOutcome]
    """Every trial of the experiment (also those finished before a resume)."""
    iterations: int
    """Training iterations a trial runs to (tune.iterations)."""
    seconds: float
    """Wall time of ``tuner.fit()``."""
    budget_s: float | None = None
    """The time budget, when it ended the search."""
    best: object | None = field(default=None, repr=False)
    """The ``Result`` of the trial with the highest last value of the search metric, as evaluate picks
    it (None: no trial reported it)."""

    @classmethod
    def from_results(cls, results, tune_cfg: TuneConfig, folder: Path, seconds: float,
                     budget_s: float | None = None) -> SearchOutcome:
        trials = []
        for r in results:
            metrics = r.metrics or {}
            iteration = int(metrics.get("training_iteration", 0) or 0)
            name = Path(r.path).name
            if r.error is not None:
                trials.append(TrialOutcome(name, "failed", iteration, root_cause(r.error), is_retryable(r.error)))
            elif metrics.get("done"):
                trials.append(TrialOutcome(name, "finished" if iteration >= tune_cfg.iterations else "stopped early",
                                           iteration))
            else:
                trials.append(TrialOutcome(name, "unfinished", iteration))
        return cls(sorted(trials, key=lambda t: t.name), tune_cfg.iterations, seconds, budget_s,
                   best_result(results, tune_cfg.metric))

    def count(self, status: str) -> int:
        return sum(t.status == status for t in self.trials)

    @property
    def ended(self) -> str:
        """How the search ended: "interrupted", "time budget" (both leave trials unfinished) or "finished"."""
        if self.count("unfinished"):
            return "time budget" if self.budget_s is not None else "interrupted"
        return "finished"

    @property
    def exit_code(self) -> int:
        """See :data:`EXIT_CODES`."""
        if self.ended == "interrupted":
            return EXIT_CODES["interrupted"]
        return EXIT_CODES["failed"] if self.count("failed") else EXIT_CODES[self.ended]

    def headline(self) -> str:
        """``search finished in 95 s: 2 trials: 1 finished, 1 stopped early by ASHA, 0 failed``."""
        took = f"{self.seconds:.0f} s"
        if self.ended == "interrupted":
            how = f"search interrupted after {took}"
        elif self.ended == "time budget":
            how = f"search stopped by its time budget ({self.budget_s:g} s) after {took}"
        else:
            how = f"search finished in {took}"
        parts = [f"{self.count('finished')} finished"] if self.count("finished") else []
        if self.count("stopped early"):
            parts.append(f"{self.count('stopped early')} stopped early by ASHA")
        if self.count("unfinished"):
            parts.append(f"{self.count('unfinished')} unfinished")
        if self.count("failed") or self.ended == "finished":
            parts.append(f"{self.count('failed')} failed")
        return f"{how}: {len(self.trials)} trials: {', '.join(parts)}"

    def trial_lines(self) -> list[str]:
        """One line per failed or unfinished trial."""
        lines = []
        for t in self.trials:
            if t.status == "failed":
                why = "" if t.retryable else " (not retried: retrying cannot fix this)"
                lines.append(f"  failed trial {t.name}: {t.error[:300]}{why}")
            elif t.status == "unfinished":
                lines.append(f"  unfinished trial {t.name}: {t.iteration} of {self.iterations} iterations")
        return lines

    def best_lines(self, metric: str) -> list[str]:
        """The best trial's score, searched values and checkpoint (nothing when none reported)."""
        best = self.best
        if best is None or not best.metrics or metric not in best.metrics:
            return ["best trial: none reported " + metric]
        learner = best.config["env_config"]["experiment"]["learner"]
        m = best.metrics
        lines = [f"best trial: {Path(best.path).name}",
                 f"  {metric} = {m[metric]:.4f}   eval/exact = {m.get('eval/exact', float('nan')):.4f}",
                 f"  agent_lr = {learner['agent_lr']:.3g}   qwen_lr = {learner['qwen_lr']:.3g}   "
                 f"reward_scale = {learner['reward_scale']:g}",
                 f"  learner device: {m.get('learner_device', '?')}"]
        if best.checkpoint is not None:
            lines.append(f"  checkpoint: {best.checkpoint.path}")
        return lines


def best_result(results, metric: str):
    """The ``Result`` whose trial's last finite ``metric`` in its ``result.json`` is highest, ties to
    the trial folder that sorts first: :func:`efe_ray.evaluation.resolve.resolve_checkpoint`'s rule
    (None when no trial reported ``metric``)."""
    scored, by_path = [], {}
    for r in results:
        path = Path(r.path)
        by_path[path] = r
        if (path / RESULT_FILE).is_file():
            value = last_metric(path / RESULT_FILE, metric)
        else:  # storage elsewhere (a URI): the last result Tune holds
            value = finite_number((r.metrics or {}).get(metric))
        if value is not None:
            scored.append((value, path))
    return by_path[highest(scored)] if scored else None
