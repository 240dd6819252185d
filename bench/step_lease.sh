#!/usr/bin/env bash
# The learner step's speed on one GPU, before and after, in one lease: the same commands on an older
# revision's tree (OLD, e.g. `git archive 280afa4 | tar -x -C old280`, carried to the machine) and on
# this one. Records go to step_results.json (bench/learner_step.py --json) in $WORK, logs beside it;
# after every measurement $WORK is packed into $OUT/<stage>.tgz (few files come back from a lease).
#
#   OLD=old280 OLD_REV=280afa4 bash bench/step_lease.sh steps    # the arc preset's step, old and new; larger
#                                                                 # batches; compiled; wider agents
#   OLD=old280 OLD_REV=280afa4 bash bench/step_lease.sh compare  # the Qwen2.5-1.5B shape, 4096 tokens, old and new
#                                                                 # (COMPARE_BATCHES="1": batch 1 alone)
#   OLD=old280 OLD_REV=280afa4 bash bench/step_lease.sh speed    # on another card: the baseline again, compiled runs
#   OLD=old280 OLD_REV=280afa4 bash bench/step_lease.sh compiled # the baseline, then compiled steps at d_model 128 and 512
#   OLD=old280 OLD_REV=280afa4 bash bench/step_lease.sh again    # without the profiler, expandable segments, a trace
#   TRIAL_S=150 bash bench/step_lease.sh ray                     # RLlib against the bare loop; a real Tune trial
#                                                                 # (TRIAL_S=0: the overhead alone; RAY_S: its limit,
#                                                                 # default 300 s: the warm-up on
#                                                                 # every task side compiles first)
#   REV=abc1234 bash bench/step_lease.sh heads                    # the 1,024-view compiled step at head width 32
#                                                                 # (4 heads, the preset) and 64 (2 heads); with
#                                                                 # OLD and OLD_REV, the old tree's step first
#   REV=abc1234 bash bench/step_lease.sh graphs                   # the same at width 64 without and with CUDA graphs
#                                                                 # (learner.cuda_graphs), then width 32 with them
#   REV=abc1234 bash bench/step_lease.sh reads                    # width 64 with the metrics read every 8, 32 and
#                                                                 # 1000 steps (each read drains the GPU's queue)
#   REV=abc1234 bash bench/step_lease.sh syncs                    # width 64 with every synchronising CUDA call
#                                                                 # counted by the line that made it (--sync-debug);
#                                                                 # with OLD and OLD_REV, the old tree's step first
#
# SETS (e.g. "learner.compile=true"): config overrides for the ray stage, space-separated.
# REV: the revision the records name (default: git's HEAD where the command runs). Pass it when the
# tree was copied to another machine: a copy's git metadata can lag its files.
# Each stage fits one 10-minute device command; a failing measurement is logged and the next runs.
set -uo pipefail
stage=${1:?usage: bash bench/step_lease.sh steps|speed|compiled|again|compare|ray|heads|graphs|reads|syncs}
OUT=${OUT:-$PWD/step_out}
WORK=${WORK:-/root/step_work}
REV=${REV:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
mkdir -p "$OUT" "$WORK"
J="$WORK/step_results.json"
say() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$WORK/lease.log"; }
pack() { tar czf "$OUT/$stage.tgz" -C "$WORK" . ; }
# bench NAME ARGS...: one learner_step run, its output in $OUT/NAME.log and its record in $J
bench() {
  local name=$1; shift
  say "learner_step $name: $*"
  timeout "${BENCH_S:-420}" python3 bench/learner_step.py --device cuda --precision bf16 --json "$J" "$@" > "$WORK/$name.log" 2>&1
  say "  exit $? $(grep -E -A1 '^samples/s|MFU|busy' "$WORK/$name.log" | grep -v '^--' | tr '\n' ' ' | cut -c1-240)"  # --compare: the header and its row
  pack
}
ARC=(--preset arc --steps 20 --profile)          # the command the issue measured today's step with
BIG=(--batch 64 --rehearsal 960 --steps-per-read 8) # 1,024 views a step; the env's read every 8 steps
baseline() { bench old-arc --code "$OLD" --revision "$OLD_REV" --sampler host "${ARC[@]}"; }  # the old tree's step
# big_compiled NAME [ARGS...]: the 1,024-view step compiled and profiled, with ARGS (e.g. --set ...) last
big_compiled() {
  local name=$1; shift
  bench "$name" --revision "$REV" --preset arc --steps 60 --warmup 70 --profile --compile "${BIG[@]}" "$@"
}
compiled_runs() {  # the 1,024-view step compiled, then the ARC issue's d_model 512
  big_compiled new-arc-big-compiled
  bench new-arc-d512-compiled --revision "$REV" --preset arc --steps 40 --warmup 70 --profile --compile \
    --set agent.d_model=512 --set agent.num_heads=8
}
case $stage in
  steps)
    baseline
    bench new-arc --revision "$REV" "${ARC[@]}"
    compiled_runs
    bench new-arc-big --revision "$REV" --preset arc --steps 60 --warmup 70 --profile "${BIG[@]}"
    bench old-arc-big --code "$OLD" --revision "$OLD_REV" --sampler host --preset arc --steps 6 --warmup 2 \
      --batch 64 --rehearsal 960
    bench new-arc-d256-compiled --revision "$REV" --preset arc --steps 40 --warmup 70 --profile --compile \
      --set agent.d_model=256 --set agent.num_heads=4
    ;;
  speed)  # on a new card: the baseline again, then compiled runs (d_model 128 and the ARC issue's 512)
    baseline
    bench new-arc-noprof --revision "$REV" --preset arc --steps 40
    compiled_runs
    ;;
  compiled)  # the shortest check of compiled steps: the baseline, the 1,024-view step compiled, then d_model 512
    baseline
    compiled_runs
    ;;
  again)  # on a new card: the baseline again; the profiler's overhead, the allocator, a trace, compiled runs
    baseline
    bench new-arc --revision "$REV" "${ARC[@]}"
    bench new-arc-noprof --revision "$REV" --preset arc --steps 40
    bench new-arc-big-noprof --revision "$REV" --preset arc --steps 60 --warmup 70 "${BIG[@]}"
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True bench new-arc-big-noprof-expandable --revision "$REV" \
      --preset arc --steps 60 --warmup 70 "${BIG[@]}"
    bench new-arc-big-trace --revision "$REV" --preset arc --steps 8 --warmup 70 --profile \
      --trace "$WORK/big.json" "${BIG[@]}"
    gzip -f "$WORK/big.json"; pack
    compiled_runs
    ;;
  compare)  # COMPARE_BATCHES (default "1 2"): the views a step at that shape. 280afa4's compiled step fails on
            # the GPU image (Inductor's mix-order reductions, RESULTS.md), so the old tree runs eager, beside
            # the new tree eager (the same code path) and compiled (the issue's setting)
    B=(--compare --shapes qwen2.5-1.5b --max-tokens 4096 --min-tokens 4096 --tasks 4 --rehearsal 0
       --cache-every 1 --precisions bf16 --warmup 4)
    # 12 and 8 timed steps left the batch-1 pair 10% apart and the batch-2 pair 3% the other way
    # (2026-12-07-b): 40 and 24 steps, and the old tree again after the new, show the runs' spread
    for b in ${COMPARE_BATCHES:-1 2}; do
      steps=$((b == 1 ? 40 : 24))
      bench old-1.5b-b$b --code "$OLD" --revision "$OLD_REV" --sampler host "${B[@]}" --batch "$b" --steps "$steps"
      bench new-1.5b-b$b --revision "$REV" "${B[@]}" --batch "$b" --steps "$steps"
      bench old-1.5b-b$b-again --code "$OLD" --revision "$OLD_REV" --sampler host "${B[@]}" --batch "$b" --steps "$steps"
      # compiled: a warm-up that sees every task twice (a new canvas side recompiles; learner_step exits 3
      # when the timed steps compiled anything)
      bench new-1.5b-b$b-compiled --revision "$REV" "${B[@]}" --compile --warmup 48 --batch "$b" --steps "$steps"
    done
    ;;
  heads)  # attention was 35% of the compiled step's GPU time at head width 32: the same step at 64
    [[ -z "${OLD:-}" ]] || baseline  # with OLD: the old tree's step first, for the same lease's ratio
    big_compiled new-arc-big-compiled
    big_compiled new-arc-big-compiled-h2 --set agent.num_heads=2
    ;;
  graphs)  # the compiled step was bound by the host at width 64: the same steps replayed as CUDA graphs
    GRAPHS=(--set learner.compile=true --set learner.cuda_graphs=true)
    big_compiled new-arc-big-compiled-h2 --set agent.num_heads=2
    big_compiled new-arc-big-graphs-h2 "${GRAPHS[@]}" --set agent.num_heads=2
    big_compiled new-arc-big-graphs "${GRAPHS[@]}"
    ;;
  reads)  # at width 64 the wall (46 ms) exceeded both the host's 35 ms and the GPU's 35.5 ms a step: the
          # read every 8 steps (the env's learner_steps_per_action) waits for the queue to drain, then the
          # GPU waits for the host to refill it; the profile's CUDA runtime calls name the wait
    for k in 8 32 1000; do big_compiled new-arc-big-h2-read$k --set agent.num_heads=2 --steps-per-read $k; done
    ;;
  syncs)  # where the host waits for the GPU inside the width-64 step: each synchronising call, by its line
    [[ -z "${OLD:-}" ]] || bench old-arc-big-h2-syncs --code "$OLD" --revision "$OLD_REV" --preset arc --steps 40 \
      --warmup 70 --compile "${BIG[@]}" --set agent.num_heads=2 --sync-debug
    bench new-arc-big-h2-syncs --revision "$REV" --preset arc --steps 40 --warmup 70 --compile "${BIG[@]}" \
      --set agent.num_heads=2 --sync-debug
    ;;
  ray)
    sets=(); for kv in ${SETS:-}; do sets+=(--set "$kv"); done
    say "ray_overhead, arc preset ${SETS:-}"
    timeout "${RAY_S:-300}" python3 bench/ray_overhead.py --preset arc --device cuda --iterations 3 \
      --set rl.train_batch_size=32 --set rl.minibatch_size=16 "${sets[@]}" > "$WORK/ray_overhead.log" 2>&1
    say "  exit $? $(grep -E 'ratio|steps/s' "$WORK/ray_overhead.log" | tr '\n' ' ')"
    pack
    [[ "${TRIAL_S:-150}" != 0 ]] || { say "TRIAL_S=0: no Tune trial"; exit 0; }
    say "a Tune trial of the arc preset, ${TRIAL_S:-150} s"
    timeout $((${TRIAL_S:-150} + 130)) python3 -m efe_ray.tune --preset arc --num-samples 1 --time-budget-s "${TRIAL_S:-150}" --no-dashboard \
      --storage-path /root/step_runs --name arc-trial "${sets[@]}" > "$WORK/tune_trial.log" 2>&1
    say "  exit $?"
    python3 bench/trial_rate.py /root/step_runs/arc-trial | tee -a "$WORK/lease.log"
    pack
    ;;
  *) echo "unknown stage $stage"; exit 2 ;;
esac
