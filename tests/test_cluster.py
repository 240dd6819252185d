"""Joining a Ray cluster with ``--address``: a head and a second node, each a ``ray start`` process
on this machine, a tiny search and an evaluation through that address. The head offers no CPU,
so every trial and every evaluation task has to run on the second node (about a minute).

The cluster uses Ray's token authentication with a token made for the test (``RAY_AUTH_TOKEN``);
a driver that joins by address sends a token only when ``RAY_AUTH_MODE=token`` is set. Ray caches
both per process, so the search and the evaluation run as commands, as a user runs them. Its
servers listen on this machine's address while the test runs: a node that joins another cannot
be loopback-only (efe_ray/rl/network.py).
"""

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from efe_ray.rl.network import LOOPBACK_ENV

pytestmark = pytest.mark.slow

MARKER = "efe_second_node"
"""A custom resource only the second node has, to find it in ``ray.nodes()``."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def ray_command() -> str:
    """The ``ray`` command of this interpreter's environment (beside ``sys.executable``; a virtual
    environment run without activating it has no ``ray`` on the PATH), else the PATH's."""
    beside = Path(sys.executable).with_name("ray")
    found = str(beside) if beside.exists() else shutil.which("ray")
    if found is None:
        pytest.fail(f"no `ray` command beside {sys.executable} or on the PATH: install ray[rllib] in this environment")
    return found


def start_node(args: list[str], env: dict, log: Path) -> tuple[subprocess.Popen, str]:
    """``ray start --block ARGS`` in its own process group; (process, its output once started)."""
    with open(log, "w") as out:
        proc = subprocess.Popen([ray_command(), "start", "--block", "--disable-usage-stats", *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        text = log.read_text()
        if "Ray runtime started" in text:
            return proc, text
        time.sleep(0.5)
    raise AssertionError(f"ray start {' '.join(args)} did not come up:\n{log.read_text()[-3000:]}")


CLUSTER_ID = "EFE_TEST_CLUSTER"
"""An environment variable every process of the test cluster inherits, set to a value of the test's own."""


def stop(proc: subprocess.Popen, cluster_id: str) -> None:
    """End a ``ray start --block`` process group (it stops most of its node's processes on
    SIGTERM), then every process still running with this test's cluster id in its environment
    (a node's agents outlive it, reparented away from its process group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    marker = f"{CLUSTER_ID}={cluster_id}".encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    environ = f.read().split(b"\0")
            except OSError:
                continue
            if marker in environ:
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture
def cluster(tmp_path):
    temp_dir = Path(tempfile.mkdtemp(prefix="efe-", dir="/tmp"))  # short: Ray's socket paths are length-limited
    env = {k: v for k, v in os.environ.items() if k != LOOPBACK_ENV}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), **{CLUSTER_ID: secrets.token_hex(8)},
               AUTOSCALER_METRIC_PORT=str(free_port()), DASHBOARD_METRIC_PORT=str(free_port()))
    nodes = []
    try:
        port = free_port()
        head, text = start_node(["--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false",
                                 f"--temp-dir={temp_dir}", f"--ray-client-server-port={free_port()}",
                                 f"--dashboard-agent-listen-port={free_port()}"], env, tmp_path / "head.log")
        nodes.append(head)
        ip = re.search(r"Local node IP\S*: \S*?(\d+\.\d+\.\d+\.\d+)", text).group(1)
        address = f"{ip}:{port}"
        second, _ = start_node([f"--address={address}", "--num-cpus=2", f'--resources={{"{MARKER}": 1}}',
                                f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}"],
                               env, tmp_path / "second.log")
        nodes.append(second)
        yield address, env
    finally:
        for proc in reversed(nodes):
            stop(proc, env[CLUSTER_ID])
        shutil.rmtree(temp_dir, ignore_errors=True)


def run(module: str, args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True, text=True, timeout=300)


def test_search_and_evaluation_through_address_run_on_the_second_node(cluster, tmp_path):
    address, env = cluster
    env = dict(env, PYTHONPATH=os.getcwd())
    search = run("efe_ray.tune", ["--preset", "smoke", "--num-samples", "1", "--iterations", "2", "--address", address,
                                  "--storage-path", str(tmp_path / "runs"), "--name", "joined"], env)
    assert search.returncode == 0, search.stdout[-3000:] + search.stderr[-3000:]
    assert "search finished in" in search.stdout and "1 trials: 1 finished, 0 failed" in search.stdout
    result = next((tmp_path / "runs" / "joined").glob("EFEPPO_*/result.json"))
    rows = [json.loads(line) for line in result.read_text().splitlines()]
    assert [r["training_iteration"] for r in rows] == [1, 2]

    evaluation = run("efe_ray.evaluate", ["--checkpoint", str(tmp_path / "runs" / "joined"), "--split",
                                          "synthetic-eval", "--address", address, "--workers", "2", "--augmentations",
                                          "1", "--out", str(tmp_path / "eval"), "--quiet"], env)
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["status"] == "ok" and report["num_tasks"] == 3

    listing = subprocess.run(
        [sys.executable, "-c", "import json, sys, ray; ray.init(address=sys.argv[1]); "
         "print(json.dumps({n['NodeID']: n['Resources'] for n in ray.nodes() if n['Alive']}))", address],
        env=env, capture_output=True, text=True, timeout=120)
    nodes = json.loads(listing.stdout.strip().splitlines()[-1])
    second = [node for node, resources in nodes.items() if MARKER in resources]
    assert len(nodes) == 2 and len(second) == 1
    assert all(resources.get("CPU", 0) == 0 for node, resources in nodes.items() if node not in second)
    assert {r["node_id"] for r in rows} == set(second)  # every iteration of the trial ran there
