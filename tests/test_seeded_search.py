"""A seeded search repeats itself: the same ``--seed`` samples the same trials, and each trial
reports the same ``losses/efe`` and ``eval/*`` at every iteration (on CPU); another seed does
not. Three small searches (the smoke preset, two iterations), each starting Ray."""

import json
import os

import pytest

from efe_ray.tune import main as tune_main

pytestmark = pytest.mark.slow

SEARCHED = ("agent_lr", "qwen_lr", "reward_scale", "seed")


def search(storage, seed: int) -> dict[tuple, list[dict]]:
    """Run a search with ``--seed seed``; {each trial's learner values (SEARCHED): its result rows}."""
    name = f"seed{seed}-{len(os.listdir(storage))}"
    # Two PPO epochs: the second shuffles the minibatches with numpy's global RNG, which only the
    # search's seed fixes (with one epoch the default preset's global RNGs hardly come into play).
    rc = tune_main(["--preset", "smoke", "--iterations", "2", "--seed", str(seed), "--set", "rl.num_epochs=2",
                    "--no-dashboard", "--num-cpus", "2", "--storage-path", str(storage), "--name", name])
    assert rc == 0
    trials = {}
    for folder in (storage / name).glob("EFEPPO_*"):
        learner = json.loads((folder / "params.json").read_text())["env_config"]["experiment"]["learner"]
        rows = [json.loads(line) for line in (folder / "result.json").read_text().splitlines()]
        trials[tuple(learner[k] for k in SEARCHED)] = rows
    assert len(trials) == 2
    return trials


def reported(rows: list[dict]) -> list[dict]:
    """Per iteration, the values that must repeat: ``losses/efe`` and every ``eval/*``."""
    return [{k: v for k, v in r.items() if k == "losses/efe" or k.startswith("eval/")} for r in rows]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two searches with seed 1 and one with seed 2."""
    storage = tmp_path_factory.mktemp("runs")
    return search(storage, 1), search(storage, 1), search(storage, 2)


def test_the_same_seed_repeats_the_trials_and_their_values(runs):
    first, second, _ = runs
    assert first.keys() == second.keys()  # the same sampled configs ...
    assert all(key[-1] == 1 for key in first)  # ... whose learners are seeded with the search's seed
    for key, rows in first.items():
        a, b = reported(rows), reported(second[key])
        both = min(len(a), len(b))
        assert both == 2 and {"losses/efe", "eval/cell_acc", "eval/exact"} <= a[0].keys()
        assert a[:both] == b[:both], key  # exactly: the same floats at every iteration both completed


def test_another_seed_gives_other_trials_and_values(runs):
    one, _, other = runs
    assert not one.keys() & other.keys()
    first_efe = [{rows[0]["losses/efe"] for rows in trials.values()} for trials in (one, other)]
    assert not first_efe[0] & first_efe[1]
