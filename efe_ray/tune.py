"""Search learning rates and the reward scale with Ray Tune over EFEPPO trials.

Run::

    python -m efe_ray.tune                       # the default preset: 2 trials, CPU or GPU
    python -m efe_ray.tune --preset gpu          # trials per GPU chosen from their estimated peak memory
    python -m efe_ray.tune --preset gpu --gpus-per-trial 0.5   # a fixed share, checked against memory
    python -m efe_ray.tune --set learner.precision=bf16 --num-samples 4
    python -m efe_ray.tune --resume --storage-path runs --name my-search

What to expect: Tune's progress table while trials run (one row per trial with its sampled
``agent_lr``, ``qwen_lr``, ``reward_scale`` and ``eval/cell_acc``), then a summary with the best
trial's config and held-out cell accuracy, the storage path, the ``tensorboard --logdir`` command
and the Ray dashboard's address. On a 2-core CPU the default search takes a few minutes.

Everything is checked before Ray starts: the preset and overrides (unknown keys, bad values), the
task files, the model path, whether the cluster has the GPUs that trials ask for, and whether the
trials that share a GPU fit in its memory (efe_ray/memory.py).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from efe_ray.config import ConfigError, ExperimentConfig, merge, to_dict
from efe_ray.data.loaders import TaskValidationError
from efe_ray.data.sources import resolve_tasks, write_skipped_tasks
from efe_ray.memory import local_card_gib, plan_gpu_share
from tuning.preflight import preflight
from tuning.presets import build_config, preset_names, search_space


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m efe_ray.tune", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="default", help=f"a preset name ({', '.join(preset_names())}) or a YAML path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set learner.precision=bf16 (repeatable)")
    p.add_argument("--num-samples", type=int, help="trials to sample (tune.num_samples)")
    p.add_argument("--iterations", type=int, help="training iterations per trial (tune.iterations)")
    p.add_argument("--gpus-per-trial", type=float, help="GPUs per trial, fractions allowed (tune.gpus_per_trial; "
                   "turns tune.share_gpus off)")
    p.add_argument("--cpus-per-trial", type=int, help="CPUs per trial (tune.cpus_per_trial)")
    p.add_argument("--storage-path", default="runs", help="where trials, checkpoints and TensorBoard files go")
    p.add_argument("--name", default=None, help="experiment folder name (default: efe-<preset>-<time>)")
    p.add_argument("--address", default=None, help="join an existing Ray cluster (e.g. auto or host:port)")
    p.add_argument("--resume", action="store_true", help="continue the experiment --storage-path/--name")
    p.add_argument("--no-dashboard", action="store_true", help="start Ray without its dashboard")
    p.add_argument("--time-budget-s", type=float, default=None, help="stop the whole search after this many seconds")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray (default: all)")
    p.add_argument("--num-gpus", type=int, default=None, help="GPUs for a local Ray (default: all)")
    return p.parse_args(argv)


def check_model(cfg: ExperimentConfig) -> None:
    """Stop at once when a named checkpoint is neither a local path nor in the local model cache."""
    name = cfg.prompt.model_name
    if not cfg.prompt.use_qwen or name == "embedded" or os.path.exists(name):
        return
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"prompt.model_name={name!r} is neither a local folder/.gguf file nor in the local model cache "
            f"({type(err).__name__}). Pass a local copy: --set prompt.model_name=/path/to/{name.split('/')[-1]} "
            f"(download it where a hub is reachable, e.g. `huggingface-cli download {name}`)"
        ) from err


def check_local_gpus(cfg: ExperimentConfig) -> None:
    """Before starting a local Ray: a trial may not ask for more GPUs than this machine has."""
    import torch

    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if cfg.tune.gpus_per_trial > have:
        raise ConfigError(
            f"tune.gpus_per_trial={cfg.tune.gpus_per_trial:g}: this machine has {have} GPU(s); "
            "use --gpus-per-trial 0 (CPU), a fraction of the GPUs present, or --address to join a cluster with GPUs"
        )


def check_resources(ppo_config, tune_cfg) -> None:
    """Fail clearly when a trial asks for more than the whole cluster has (it would stay PENDING)."""
    import ray

    from efe_ray.rl.algorithm import EFEPPO

    request = EFEPPO.default_resource_request(ppo_config).required_resources
    have = ray.cluster_resources()
    for resource in ("GPU", "CPU"):
        need = float(request.get(resource, 0.0))
        if need > float(have.get(resource, 0.0)) + 1e-9:
            raise ConfigError(
                f"tune.gpus_per_trial={tune_cfg.gpus_per_trial}, tune.cpus_per_trial={tune_cfg.cpus_per_trial}: "
                f"each trial needs {need:g} {resource} but the Ray cluster has {have.get(resource, 0.0):g}"
                + (" (use --gpus-per-trial 0 on a machine without GPUs)" if resource == "GPU" else "")
            )


def param_space(cfg: ExperimentConfig) -> dict:
    """RLlib config dict with Tune's distributions placed inside the env's experiment config."""
    from efe_ray.rl.config import ppo_config

    base = ppo_config(cfg).to_dict()
    experiment = to_dict(cfg)
    for path, dist in search_space(cfg).items():
        experiment = merge(experiment, {path: dist})
    base["env_config"] = {"experiment": experiment}
    return base


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = build_config(args.preset, args.overrides, num_samples=args.num_samples, iterations=args.iterations,
                           gpus_per_trial=args.gpus_per_trial, cpus_per_trial=args.cpus_per_trial,
                           # an explicit share is kept (and checked), not replaced by the memory plan
                           share_gpus=False if args.gpus_per_trial is not None else None)
        train, held = resolve_tasks(cfg.data, cfg.agent.canvas)
        check_model(cfg)
        if not args.address:
            check_local_gpus(cfg)
        cfg.tune.gpus_per_trial, gpu_plan = plan_gpu_share(cfg, train, None if args.address else local_card_gib())
        preflight(cfg, train, args.storage_path, address=args.address, num_cpus=args.num_cpus)
    except (ConfigError, TaskValidationError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if cfg.tune.gpus_per_trial > 0:
        print(f"GPU memory: {gpu_plan}")
    print(f"{len(train)} training tasks from {cfg.data.train_source!r}, {len(held)} held-out tasks from "
          f"{cfg.data.eval_source!r}")

    # Tune's newer console output prints each trial's entire RLlib config; the classic reporter
    # shows the searched values and our metrics as columns.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Snapshot the experiment state often, so that a search killed with -9 resumes from the trials'
    # latest checkpoints rather than from a stale snapshot that predates them.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    from efe_ray.rl.algorithm import EFEPPO
    from efe_ray.rl.config import ppo_config
    from efe_ray.rl.tensorboard import EFETensorBoardCallback

    storage = Path(args.storage_path).resolve()
    name = args.name or f"efe-{Path(args.preset).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.resume and not args.name:
        print("error: --resume needs --name (the experiment folder under --storage-path)", file=sys.stderr)
        return 2
    write_skipped_tasks(storage / name, cfg)
    dashboard = not args.no_dashboard
    init_kwargs: dict = {"include_dashboard": dashboard, "dashboard_host": "127.0.0.1"} if dashboard else {"include_dashboard": False}
    if args.address:
        ctx = ray.init(address=args.address)
    else:
        ctx = ray.init(num_cpus=args.num_cpus, num_gpus=args.num_gpus, **init_kwargs)
    if dashboard and not args.address and getattr(ctx, "dashboard_url", None):
        print(f"Ray dashboard: http://{ctx.dashboard_url}  (sign in with the token from `ray get-auth-token`)")
    try:
        try:
            check_resources(ppo_config(cfg), cfg.tune)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        t = cfg.tune
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=t.iterations, grace_period=min(t.grace_period, t.iterations))
        run_config = tune.RunConfig(
            name=name,
            storage_path=str(storage),
            stop={"training_iteration": t.iterations},
            checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=t.checkpoint_every, checkpoint_at_end=True,
                                                    num_to_keep=None),
            failure_config=tune.FailureConfig(max_failures=t.max_failures),
            callbacks=[EFETensorBoardCallback()],
            progress_reporter=progress_reporter(t.metric),
            verbose=1,
        )
        if args.resume:
            tuner = tune.Tuner.restore(str(storage / name), trainable=EFEPPO, resume_unfinished=True, resume_errored=True)
        else:
            tuner = tune.Tuner(
                EFEPPO,
                param_space=param_space(cfg),
                tune_config=tune.TuneConfig(metric=t.metric, mode="max", scheduler=scheduler, num_samples=t.num_samples,
                                            max_concurrent_trials=t.max_concurrent or None,
                                            time_budget_s=args.time_budget_s,
                                            search_alg=BasicVariantGenerator(random_state=cfg.learner.seed)),
                run_config=run_config,
            )
        start = time.time()
        results = tuner.fit()
        summarize(results, cfg, storage / name, ctx, dashboard and not args.address, time.time() - start)
        return 0 if results.num_errors == 0 else 1
    finally:
        ray.shutdown()


def progress_reporter(metric: str):
    """Tune's progress table: the searched values and the metrics worth watching."""
    from ray.tune import CLIReporter

    prefix = "env_config/experiment/learner/"
    return CLIReporter(
        parameter_columns={f"{prefix}agent_lr": "agent_lr", f"{prefix}qwen_lr": "qwen_lr",
                           f"{prefix}reward_scale": "reward_scale"},
        metric_columns={"training_iteration": "iter", "losses/efe": "efe", "charts/mask_ratio": "mask",
                        "charts/reward": "reward", metric: metric, "eval/exact": "exact"},
        max_report_frequency=15,
        sort_by_metric=True,
    )


def root_cause(error: BaseException) -> str:
    """The innermost "Type: message" line of a trial's error (Ray wraps the original traceback)."""
    pattern = re.compile(r"^\s*([A-Za-z_][\w.]*(Error|Exception|Fault|Interrupt)): (.+)$")
    lines = [m.group(0).strip() for m in map(pattern.match, str(error).splitlines()) if m]
    return lines[-1] if lines else f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def summarize(results, cfg: ExperimentConfig, path: Path, ctx, dashboard: bool, seconds: float) -> None:
    """Print the best trial, failures, where things are and how to look at them."""
    metric = cfg.tune.metric
    print("\n" + "=" * 72)
    print(f"search finished in {seconds:.0f} s: {len(results)} trials, {results.num_errors} failed")
    for r in results:
        if r.error is not None:
            print(f"  failed trial {Path(r.path).name}: {root_cause(r.error)[:300]}")
    try:
        best = results.get_best_result(metric=metric, mode="max", scope="all")
    except (RuntimeError, KeyError):
        best = None
    if best is not None and best.metrics:
        exp = best.config["env_config"]["experiment"]["learner"]
        print(f"best trial: {Path(best.path).name}")
        print(f"  {metric} = {best.metrics.get(metric, float('nan')):.4f}   eval/exact = {best.metrics.get('eval/exact', float('nan')):.4f}")
        print(f"  agent_lr = {exp['agent_lr']:.3g}   qwen_lr = {exp['qwen_lr']:.3g}   reward_scale = {exp['reward_scale']:g}")
        print(f"  learner device: {best.metrics.get('learner_device', '?')}")
        if best.checkpoint is not None:
            print(f"  checkpoint: {best.checkpoint.path}")
    print(f"storage path: {path}")
    print(f"TensorBoard:  tensorboard --logdir {path}")
    if dashboard and getattr(ctx, "dashboard_url", None):
        print(f"Ray dashboard (while Ray runs): http://{ctx.dashboard_url}  (token: ray get-auth-token)")
    print(f"evaluate:     python -m efe_ray.evaluate --checkpoint {path} --split {cfg.data.eval_source}")
    print("=" * 72)


if __name__ == "__main__":
    sys.exit(main())
