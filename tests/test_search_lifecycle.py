"""A local search as a user runs it (``python -m efe_ray.tune`` in its own process group, with the
dashboard on): what it listens on, what a second search sees, Ctrl-C, and a resume under a time
budget. The tests share one search (about a minute and a half in all)."""

import glob
import http.client
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from efe_ray.tune import main as tune_main

pytestmark = pytest.mark.slow

NAME = "life"
ITERATIONS = 12


def reported(storage):
    """Result rows so far, per trial."""
    return [[json.loads(line) for line in open(f) if line.strip()]
            for f in sorted(glob.glob(str(storage / NAME / "EFEPPO_*" / "result.json")))]


def process_tree(root: int) -> set[int]:
    """``root`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo += children.get(pid, [])
    return tree


def listening_sockets(pids: set[int]) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every TCP socket in LISTEN state owned by ``pids`` (``ss -ltnp``)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        local = line.split()[3]
        owners = [(name, int(pid)) for name, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line)]
        for name, pid in owners:
            if pid in pids:
                address, port = local.rsplit(":", 1)
                found.append((address.strip("[]"), int(port), name))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.replace("::ffff:", "") if address.startswith("::ffff:") else address)
    return ip.is_loopback


def http_get(port: int, path: str = "/") -> tuple[int, bytes] | None:
    """(status, start of body) of ``GET path`` on 127.0.0.1:port without credentials (None: no HTTP answer)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read(64)
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


@pytest.fixture(scope="module")
def running_search(tmp_path_factory):
    storage = tmp_path_factory.mktemp("runs")
    log = storage / "search.log"
    cmd = [sys.executable, "-m", "efe_ray.tune", "--preset", "smoke", "--iterations", str(ITERATIONS),
           "--set", "tune.grace_period=100", "--num-cpus", "2", "--storage-path", str(storage), "--name", NAME]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            rows = reported(storage)
            if len(rows) == 2 and all(len(r) >= 2 for r in rows):
                break
            time.sleep(0.5)
        assert proc.poll() is None, log.read_text()[-3000:]
        yield proc, storage, log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # only if a test failed before Ctrl-C ended it
            proc.wait()


@pytest.fixture(scope="module")
def interrupted_search(running_search):
    """Ctrl-C as a terminal sends it (SIGINT to the search's process group); (exit status, output)."""
    proc, storage, log = running_search
    os.killpg(proc.pid, signal.SIGINT)
    rc = proc.wait(timeout=120)
    return rc, log.read_text(), storage


def test_a_local_search_listens_only_on_loopback(running_search):
    proc, _, _ = running_search
    sockets = listening_sockets(process_tree(proc.pid))
    processes = {name for _, _, name in sockets}
    assert {"gcs_server", "raylet"} <= processes, sockets  # the search's own Ray
    exposed = [s for s in sockets if not is_loopback(s[0])]
    assert exposed == [], f"listening on a non-loopback address: {exposed}"
    # The Prometheus endpoints answer without a token (so they must stay on loopback); the
    # dashboard's API asks for the token.
    answers = {port: http_get(port) for _, port, _ in sockets}
    metrics = [port for port, got in answers.items() if got and got[0] == 200 and got[1].startswith(b"# HELP")]
    assert len(metrics) >= 2, answers
    assert http_get(8265, "/api/version")[0] == 401


def test_a_second_search_or_a_resume_is_refused_while_it_runs(running_search, capsys):
    proc, storage, _ = running_search
    for argv in (["--preset", "smoke", "--name", NAME], ["--resume"]):
        start = time.time()
        assert tune_main([*argv, "--storage-path", str(storage), "--no-dashboard"]) == 2
        assert time.time() - start < 30
        assert f"is in use by pid {proc.pid} on host" in capsys.readouterr().err


ACTOR_LINE = re.compile(r"^(.*? pid=\d+\)\S*) ?(.*)$")
"""A line a Ray actor printed: (its prefix, ``(Name pid=N)`` with colour codes, and the text)."""


def without_ignored_finalizer_errors(out: str) -> str:
    """``out`` less the reports of exceptions Python ignored in an actor's finalizer ("Exception
    ignored in: <function ...__del__>" and the lines of the same actor after it). When Ray ends a
    trial's actor with SIGTERM while RLlib's ``LearnerGroup.__del__`` runs, Ray's handler raises
    SystemExit inside it and Python prints such a report: nothing failed, and nothing propagated."""
    kept, ignoring = [], None
    for line in out.splitlines():
        m = ACTOR_LINE.match(line)
        prefix, text = (m.group(1), m.group(2)) if m else (None, line)
        if prefix and text.startswith("Exception ignored in: <function") and "__del__" in text:
            ignoring = prefix
            continue
        if ignoring is not None and prefix == ignoring:
            continue
        ignoring = None
        kept.append(line)
    return "\n".join(kept)


def test_an_ignored_finalizer_error_is_left_out_and_any_other_traceback_kept():
    actor = "\x1b[36m(EFEPPO(env=<class 'x'>; env-runners=0) pid=7)\x1b[0m"
    other = "\x1b[36m(EFEPPO pid=8)\x1b[0m"
    out = "\n".join([f"{actor} Exception ignored in: <function LearnerGroup.__del__ at 0x1>",
                     f"{actor} Traceback (most recent call last):", f"{actor} SystemExit: 1",
                     f"{other} Traceback (most recent call last):", "Traceback (most recent call last):"])
    assert without_ignored_finalizer_errors(out).splitlines() == \
        [f"{other} Traceback (most recent call last):", "Traceback (most recent call last):"]


def test_ctrl_c_ends_with_an_accurate_summary_and_the_resume_command(interrupted_search):
    rc, out, storage = interrupted_search
    assert rc == 130
    summary = out[out.rindex("=" * 72, 0, out.rindex("=" * 72)):]
    assert re.search(r"search interrupted after \d+ s: 2 trials: (\d+ finished, )?2 unfinished\n", summary), summary
    assert summary.count(f"of {ITERATIONS} iterations") == 2
    assert f"resume:       python -m efe_ray.tune --resume --name {NAME} --storage-path {storage}" in summary
    assert "Tuner.restore" not in out and "0 failed" not in out
    assert "Traceback" not in without_ignored_finalizer_errors(out)


def test_a_bare_resume_under_a_1_s_budget_stops_cleanly_and_stays_resumable(interrupted_search, capsys):
    _, _, storage = interrupted_search
    before = [len(rows) for rows in reported(storage)]
    rc = tune_main(["--resume", "--storage-path", str(storage), "--no-dashboard", "--num-cpus", "2",
                    "--time-budget-s", "1"])
    out = capsys.readouterr().out
    assert rc == 124
    assert f"resuming the newest experiment under {storage}: {NAME}" in out
    assert re.search(r"search stopped by its time budget \(1 s\) after \d+ s: 2 trials: 2 unfinished\n", out), out
    assert f"python -m efe_ray.tune --resume --name {NAME} --storage-path {storage}" in out
    assert "Traceback" not in out and "Tuner.restore" not in out
    assert all(len(rows) < ITERATIONS for rows in reported(storage)) and len(before) == 2
