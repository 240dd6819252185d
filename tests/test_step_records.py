"""bench/learner_step.py --json: each run appends one record of the keys bench/step_results.json holds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"revision", "card", "date", "preset", "d_model", "batch_views", "samples_per_s", "mfu", "gpu_busy",
        "kernels_per_step", "command", "heads", "compile", "cuda_graphs"}


def run(out: Path, *extra: str) -> None:
    subprocess.run([sys.executable, "bench/learner_step.py", "--preset", "arc", "--steps", "2", "--warmup", "1",
                    "--batch", "2", "--rehearsal", "2", "--tasks", "2", "--revision", "abc1234", "--json", str(out),
                    *extra], cwd=ROOT, check=True, capture_output=True, text=True, timeout=300)


def test_each_run_appends_its_record(tmp_path):
    out = tmp_path / "step_results.json"
    run(out)
    run(out, "--set", "agent.num_heads=2")
    first, second = json.loads(out.read_text())
    assert KEYS <= set(first) and KEYS <= set(second)
    assert (first["revision"], first["preset"], first["d_model"], first["batch_views"]) == ("abc1234", "arc", 128, 4)
    assert first["card"] and first["card"] == second["card"]  # the machine, named
    assert (first["heads"], second["heads"]) == (4, 2)  # the setting that tells the two apart
    assert (first["compile"], first["cuda_graphs"]) == (False, False)
    assert first["compiled_in_timed"] == 0 and second["compiled_in_timed"] == 0  # eager: nothing compiled
    assert first["samples_per_s"] > 0 and first["mfu"] is None  # no dense peak known for a CPU
    assert first["gpu_busy"] is None and first["kernels_per_step"] is None  # no profile on a CPU run
    assert second["command"].startswith("python bench/learner_step.py") and "agent.num_heads=2" in second["command"]


def test_the_profile_sums_kernels_and_names_the_host_calls_that_wait(monkeypatch):
    """kernel_summary on a profiler's averages: kernels by kind and name per step, ranges around
    kernels left out, and the host's CUDA runtime calls ranked by host time, so that a call that
    waits for the GPU stands out beside the launches."""
    import torch
    sys.path.insert(0, str(ROOT / "bench"))
    from step_profile import kernel_breakdown, kernel_summary

    cuda, cpu = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU

    class Evt:
        def __init__(self, key, device_type, device_us=0.0, cpu_us=0.0, count=1):
            self.key, self.device_type, self.count = key, device_type, count
            self.device_time_total, self.cpu_time_total = device_us, cpu_us

    class Prof:
        def key_averages(self):
            return [Evt("gemm_kernel", cuda, 20_000.0, count=40), Evt("triton_poi_fused_add", cuda, 10_000.0, count=100),
                    Evt("Optimizer.step#AdamW.step", cuda, 30_000.0),  # a range, not a kernel
                    Evt("cudaLaunchKernel", cpu, cpu_us=7_000.0, count=140),
                    Evt("cudaStreamSynchronize", cpu, cpu_us=90_000.0, count=10), Evt("aten::mm", cpu, cpu_us=5e5)]

    s = kernel_summary(Prof(), wall_s=0.5, steps=10)
    assert s["kernel_ms"] == 3.0 and s["gpu_busy"] == 0.06 and s["kernels_per_step"] == 14.0
    assert s["per_kind_ms"] == {"matmul": 2.0, "elementwise": 1.0}
    assert s["runtime_calls"] == [("cudaStreamSynchronize", 9.0, 1.0), ("cudaLaunchKernel", 0.7, 14.0)]
    assert "9.00      1  cudaStreamSynchronize" in kernel_breakdown(s)


def test_sync_sites_name_the_projects_line_and_the_library_line_below_it():
    """--sync-debug counts each synchronising CUDA call by the innermost line of the project's code
    that led to it, with the library's own line where the call was made below it."""
    import traceback
    sys.path.insert(0, str(ROOT / "bench"))
    from learner_step import sync_site

    def frame(path: str, line: int, name: str) -> traceback.FrameSummary:
        return traceback.FrameSummary(path, line, name)
    torch_item = frame("/usr/lib/python3/site-packages/torch/optim/adamw.py", 90, "step")
    sampler = frame(f"{ROOT}/efe_ray/data/device_views.py", 275, "prompt_tokens")
    bench = frame(f"{ROOT}/bench/learner_step.py", 240, "run")
    old_tree = frame("/root/old280/efe_ray/learner.py", 12, "step")
    assert sync_site([bench, sampler]) == "efe_ray/data/device_views.py:275 prompt_tokens"
    assert sync_site([bench, sampler, torch_item]) == \
        "efe_ray/data/device_views.py:275 prompt_tokens (via /usr/lib/python3/site-packages/torch/optim/adamw.py:90)"
    assert sync_site([bench]) == "bench/learner_step.py:240 run"  # the benchmark's own read of the metrics
    assert sync_site([old_tree]) == "efe_ray/learner.py:12 step"  # an older revision's tree, given with --code
    assert sync_site([torch_item]) == "/usr/lib/python3/site-packages/torch/optim/adamw.py:90 step"
    # a tree in a folder called efe_ray, with its libraries installed inside it: names relative to the tree
    tree = "/tmp/x/efe_ray"
    venv_item = frame(f"{tree}/.venv/lib/python3.11/site-packages/torch/optim/adamw.py", 90, "step")
    here = [frame(f"{tree}/bench/learner_step.py", 240, "run"), frame(f"{tree}/efe_ray/learner.py", 7, "step")]
    assert sync_site(here[:1], root=tree) == "bench/learner_step.py:240 run"
    assert sync_site([*here, venv_item], root=tree) == \
        f"efe_ray/learner.py:7 step (via {tree}/.venv/lib/python3.11/site-packages/torch/optim/adamw.py:90)"


def test_the_sync_counter_counts_the_synchronising_calls_and_lets_other_warnings_through():
    import warnings
    sys.path.insert(0, str(ROOT / "bench"))
    from learner_step import SyncCounter

    def synchronising_call():  # what torch's sync debug mode reports for each such call
        warnings.warn("called a synchronizing CUDA operation", UserWarning)
    with warnings.catch_warnings(record=True) as passed:
        warnings.simplefilter("always")
        with SyncCounter(cuda=False) as syncs:
            for _ in range(3):
                synchronising_call()
            warnings.warn("something else", UserWarning)
        synchronising_call()  # after exit: not counted, reported as any warning
    assert sum(syncs.sites.values()) == 3 and len(syncs.sites) == 1
    (site,) = syncs.sites
    assert "test_step_records.py" in site and "synchronising_call" in site
    assert [str(w.message) for w in passed] == ["something else", "called a synchronizing CUDA operation"]


def test_graphs_compiled_in_the_timed_steps_are_counted_and_make_the_run_invalid():
    import torch
    sys.path.insert(0, str(ROOT / "bench"))
    from compiled import compiled_graphs
    from learner_step import compile_warning

    add_one = torch.compile(lambda x: x + 1, backend="eager")  # Dynamo's graphs without Inductor's cost
    start = compiled_graphs()
    add_one(torch.ones(2))
    add_one(torch.ones(2))  # the same shape: no new graph
    assert compiled_graphs() - start == 1
    add_one(torch.ones(3))  # a new shape, as a task with another canvas side brings: compiled again
    assert compiled_graphs() - start == 2
    assert compile_warning({"compiled_in_timed": 0}) == ""
    warning = compile_warning({"compiled_in_timed": 2})
    assert warning.startswith("INVALID TIMING") and "2 graph(s) compiled during the timed steps" in warning


def test_sync_debug_needs_a_cuda_device():
    out = subprocess.run([sys.executable, "bench/learner_step.py", "--sync-debug", "--device", "cpu"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--sync-debug counts CUDA synchronisations: it needs --device cuda, not cpu" in out.stderr
