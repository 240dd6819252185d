"""Search learning rates and the reward scale with Ray Tune over EFEPPO trials.

Run::

    python -m efe_ray.tune                       # the default preset: 2 trials, CPU or GPU
    python -m efe_ray.tune --preset gpu          # trials per GPU chosen from their estimated peak memory
    python -m efe_ray.tune --preset gpu --gpus-per-trial 0.5   # a fixed share, checked against memory
    python -m efe_ray.tune --set learner.precision=bf16 --num-samples 4
    python -m efe_ray.tune --seed 7                # another seed: other trials (the same seed repeats a search)
    python -m efe_ray.tune --resume --storage-path runs --name my-search
    python -m efe_ray.tune --resume              # the newest experiment under --storage-path

What to expect: Tune's progress table while trials run (one row per trial with its sampled
``agent_lr``, ``qwen_lr``, ``reward_scale`` and ``eval/cell_acc``), then a summary: how many
trials finished, were stopped early by ASHA, failed (with the root cause) or are unfinished, the
best trial's config and held-out cell accuracy, the storage path, the ``tensorboard --logdir``
command, the Ray dashboard's address and, when something is left to do, the ``--resume`` command.
On a 2-core CPU the default search takes a few minutes. Two searches with the same ``--seed``
(default 0) sample the same trials and, on CPU, report the same values at every iteration.

Everything is checked before Ray starts: the preset and overrides (unknown keys, bad values), the
task files, the model path, whether the cluster has the GPUs that trials ask for, and whether the
trials that share a GPU fit in its memory (efe_ray/memory.py). A search locks its experiment
folder: a second search or ``--resume`` of the same folder is refused while it runs.

Exit status: 0 the search finished; 1 a trial failed; 2 refused before Ray started (bad input,
experiment folder in use); 124 the time budget left trials unfinished; 130 interrupted (Ctrl-C).
After 1, 124 and 130 the summary ends with the ``--resume`` command that continues the search.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from efe_ray.config import ConfigError, ExperimentConfig, from_dict, merge, to_dict
from efe_ray.data.loaders import TaskValidationError
from efe_ray.data.sources import resolve_tasks, write_skipped_tasks
from efe_ray.memory import local_card_gib, plan_gpu_share
from efe_ray.rl.experiment import (ExperimentBusyError, ExperimentLock, is_experiment, last_saved,
                                   newest_experiment, resume_command, save_config, stored_config)
from efe_ray.rl.network import bind_local_ray_to_loopback
from tuning.preflight import preflight
from tuning.presets import build_config, preset_names, search_space

EXPERIMENT_OPTIONS = ("preset", "overrides", "num_samples", "iterations", "gpus_per_trial", "cpus_per_trial",
                      "keep_checkpoints", "seed")
"""Options that shape an experiment; a resumed one keeps those it was started with."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m efe_ray.tune", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", help=f"a preset name ({', '.join(preset_names())}) or a YAML path (default: default)")
    p.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. --set learner.precision=bf16 (repeatable)")
    p.add_argument("--num-samples", type=int, help="trials to sample (tune.num_samples)")
    p.add_argument("--iterations", type=int, help="training iterations per trial (tune.iterations)")
    p.add_argument("--gpus-per-trial", type=float, help="GPUs per trial, fractions allowed (tune.gpus_per_trial; "
                   "turns tune.share_gpus off)")
    p.add_argument("--cpus-per-trial", type=int, help="CPUs per trial (tune.cpus_per_trial)")
    p.add_argument("--seed", type=int, help="seed of the search: trial sampling, PPO, each trial's learner and "
                   "sampler (tune.seed; default 0)")
    p.add_argument("--storage-path", default="runs", help="where trials, checkpoints and TensorBoard files go")
    p.add_argument("--name", default=None, help="experiment folder name (default: efe-<preset>-<time>)")
    p.add_argument("--address", default=None, help="join an existing Ray cluster (e.g. auto or host:port)")
    p.add_argument("--resume", action="store_true",
                   help="continue the experiment --storage-path/--name (without --name: the newest there) with the "
                        "settings it was started with. Tune unpickles the folder's tuner.pkl and experiment state, "
                        "which can run code: resume only experiment folders you trust (your own)")
    p.add_argument("--no-dashboard", action="store_true", help="start Ray without its dashboard")
    p.add_argument("--time-budget-s", type=float, default=None,
                   help="end the search after this many seconds, as Ctrl-C does (running trials stay resumable)")
    p.add_argument("--keep-checkpoints", type=int, default=None, metavar="K",
                   help="per trial, keep the K best checkpoints by tune.metric plus the latest (default 1; 0: keep all)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray (default: all)")
    p.add_argument("--num-gpus", type=int, default=None, help="GPUs for a local Ray (default: all)")
    args = p.parse_args(argv)
    if args.time_budget_s is not None and args.time_budget_s <= 0:
        p.error(f"--time-budget-s must be > 0, got {args.time_budget_s:g}")
    if args.keep_checkpoints is not None and args.keep_checkpoints < 0:
        p.error(f"--keep-checkpoints must be >= 0, got {args.keep_checkpoints}")
    if args.resume:
        given = [f"--{o.replace('_', '-')}" if o != "overrides" else "--set" for o in EXPERIMENT_OPTIONS
                 if getattr(args, o) is not None]
        if given:
            p.error(f"--resume continues an experiment with the settings it was started with; drop {', '.join(given)}")
    return args


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


def experiment_folder(args: argparse.Namespace, storage: Path) -> Path:
    """The experiment folder: ``storage/--name``, a new name, or (bare ``--resume``) the newest."""
    if args.name:
        folder = storage / args.name
        if args.resume and not is_experiment(folder):
            raise FileNotFoundError(f"--resume: {folder} holds no experiment to continue")
        return folder
    if args.resume:
        folder = newest_experiment(storage)
        print(f"resuming the newest experiment under {storage}: {folder.name} "
              f"(state saved {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(last_saved(folder)))})")
        return folder
    return storage / f"efe-{Path(args.preset or 'default').stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def experiment_config(args: argparse.Namespace, folder: Path) -> ExperimentConfig:
    """The config the search runs with: a resumed experiment's own, else preset + overrides + options."""
    if args.resume:
        stored = stored_config(folder)
        if stored is not None:
            return from_dict(ExperimentConfig, stored)
        print(f"note: {folder} does not record its config; the checks before Ray starts and the summary use the "
              "default preset (the trials keep the settings the experiment was started with)", file=sys.stderr)
    return build_config(args.preset or "default", args.overrides or [], num_samples=args.num_samples,
                        iterations=args.iterations, gpus_per_trial=args.gpus_per_trial,
                        cpus_per_trial=args.cpus_per_trial, seed=args.seed,
                        # an explicit share is kept (and checked), not replaced by the memory plan
                        share_gpus=False if args.gpus_per_trial is not None else None)


def param_space(cfg: ExperimentConfig, env_cls: type | None = None) -> dict:
    """RLlib config dict with Tune's distributions placed inside the env's experiment config."""
    from efe_ray.rl.config import ppo_config

    base = ppo_config(cfg, env_cls).to_dict()
    experiment = to_dict(cfg)
    for path, dist in search_space(cfg).items():
        experiment = merge(experiment, {path: dist})
    base["env_config"] = {"experiment": experiment}
    return base


def main(argv: list[str] | None = None, *, env_cls: type | None = None) -> int:
    """The command; its exit status. ``env_cls``: the env class trials train in (default
    ArcPromptEnv; tests pass a subclass that injects faults)."""
    args = parse_args(argv)
    storage = Path(args.storage_path).resolve()
    try:
        folder = experiment_folder(args, storage)
        cfg = experiment_config(args, folder)
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
    lock = ExperimentLock(folder)
    try:
        lock.acquire()
    except (ExperimentBusyError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        if not args.resume and is_experiment(folder):
            print(f"error: {folder} already holds a search; continue it with --resume --name {folder.name}, "
                  "or choose another --name", file=sys.stderr)
            return 2
        if not args.resume:
            save_config(folder, to_dict(cfg))
        write_skipped_tasks(folder, cfg)
        return run(args, cfg, folder, env_cls)
    finally:
        lock.release()


def run(args: argparse.Namespace, cfg: ExperimentConfig, folder: Path, env_cls: type | None = None) -> int:
    """Start (or join) Ray, run the search in ``folder`` and print its summary; the exit status."""
    # Tune's newer console output prints each trial's entire RLlib config; the classic reporter
    # shows the searched values and our metrics as columns.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Snapshot the experiment state often, so that a search killed with -9 resumes from the trials'
    # latest checkpoints rather than from a stale snapshot that predates them.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    if not args.address:
        note = bind_local_ray_to_loopback()  # before Ray is imported
        if note:
            print(f"note: {note}", file=sys.stderr)
    import ray

    from efe_ray.rl import search
    from efe_ray.rl.config import ppo_config

    dashboard = not args.no_dashboard and not args.address
    try:
        ctx = search.start_ray(args.address, args.num_cpus, args.num_gpus, not args.no_dashboard)
        try:
            if dashboard and getattr(ctx, "dashboard_url", None):
                print(f"Ray dashboard: http://{ctx.dashboard_url}  (sign in with the token from `ray get-auth-token`)")
            check_resources(ppo_config(cfg), cfg.tune)
            keep = 1 if args.keep_checkpoints is None else args.keep_checkpoints
            tuner = (search.restored_tuner(folder) if args.resume
                     else search.new_tuner(param_space(cfg, env_cls), cfg, folder, keep))
            outcome = search.run_search(tuner, cfg, folder, args.time_budget_s)
        finally:
            ray.shutdown()
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ConnectionError as err:  # ray.init could not join --address
        cause = str(err.__cause__).strip().splitlines()[-1] if err.__cause__ else ""
        print(f"error: {err} {cause}\n(joining a cluster that uses token authentication needs RAY_AUTH_MODE=token "
              "and the cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nsearch interrupted before Tune could take a last snapshot; the latest snapshot (every 2 s) and "
              "the trials' checkpoints are kept")
        if is_experiment(folder):
            print(f"resume:       {resume_command(folder, args.address)}")
        return 130
    print_summary(outcome, cfg, folder, ctx if dashboard else None, args.address)
    return outcome.exit_code


def print_summary(outcome, cfg: ExperimentConfig, folder: Path, ctx, address: str | None) -> None:
    """How the search ended and what became of each trial, the best one, where things are and
    how to look at them, and how to continue it."""
    print("\n" + "=" * 72)
    print(outcome.headline())
    for line in outcome.trial_lines() + outcome.best_lines(cfg.tune.metric):
        print(line)
    print(f"storage path: {folder}")
    print(f"TensorBoard:  tensorboard --logdir {folder}")
    if ctx is not None and getattr(ctx, "dashboard_url", None):
        print(f"Ray dashboard (while Ray runs): http://{ctx.dashboard_url}  (token: ray get-auth-token)")
    if outcome.best is not None and outcome.best.checkpoint is not None:
        print(f"evaluate:     python -m efe_ray.evaluate --checkpoint {folder} --split {cfg.data.eval_source}")
    if outcome.count("unfinished") or outcome.count("failed"):
        what = ("continues the unfinished trials from their latest checkpoints" if outcome.count("unfinished")
                else "retries the failed trials from their latest checkpoints; fix their cause first")
        print(f"resume:       {resume_command(folder, address)}  ({what})")
    print("=" * 72)


if __name__ == "__main__":
    sys.exit(main())
