#!/usr/bin/env bash
# The ARC pipeline of one GPU lease: Ray Tune trials across the GPUs, continued with --resume in a
# later command, trials per hour on all GPUs against one, then python -m efe_ray.evaluate with
# test-time adaptation on ARC-AGI-1 and ARC-AGI-2 evaluation, fanned out over the GPUs. Each stage
# fits one device command (10 minutes); results go to $OUT as a few small files.
#
#   bash bench/arc_lease.sh train      # main search on GPUs 0..G-2, no-transduction ablation on the last
#                                      # (one GPU: the main search alone)
#   bash bench/arc_lease.sh resume     # the searches continue from their checkpoints (--resume)
#   bash bench/arc_lease.sh eval-main  # bf16 exports; ARC-AGI-1 evaluation with adaptation, ablations, baselines
#   bash bench/arc_lease.sh eval-more  # the no-transduction checkpoint; the training weights (no EMA);
#                                      # ARC-AGI-2 evaluation; the training-set fit
#   bash bench/arc_lease.sh scale      # trials per hour: the arc search on all G GPUs, then on one
#   bash bench/arc_lease.sh eval-scale # ARC-AGI-1 evaluation of each snapshot (the compute-scaling rows)
#   bash bench/arc_lease.sh eval-tta   # the final checkpoint with more adaptation steps (TTA_MORE, default 600)
#   bash bench/arc_lease.sh eval-notta # the final checkpoint without adaptation (the row model-no-tta)
#   bash bench/arc_lease.sh ablate     # recipe arms trained side by side on the same GPUs, each scored on
#                                      # the first ABLATE_LIMIT ARC-AGI-1 evaluation tasks
#   bash bench/arc_lease.sh eval-ablate # the arms of an ablate stage run with ABLATE_EVAL_S=0, scored
#   bash bench/arc_lease.sh pack       # archives of what exists so far (reports, TensorBoard files, exports)
#
# SETS="learner.ema_decay=0.999 learner.compile=true" on train: config overrides of the main search
# (space-separated key=value), written to the log. Where the main search kept an average of the
# weights, eval-main also exports its training weights (export-arc-trained) and eval-more scores
# them as the row model-no-ema: the average's ablation from the same trial.
#
# ARMS on ablate: space-separated NAME:key=value,key=value arms (an empty list after the colon is the
# recipe as SETS gives it), e.g. ARMS="base: no-warmup:learner.warmup_steps=0". Every arm is a search
# of its own (--name ablate-NAME, SETS then the arm's overrides) for ABLATE_S seconds; they run at
# the same time and share the GPUs, so they get equal compute. Each is exported and scored with
# eval-main's settings on the first ABLATE_LIMIT tasks (ABLATE_EVAL_S seconds): the rows
# model-ablate-NAME, comparable with each other (not with the main search, which had a GPU alone).
# ABLATE_EVAL_S=0 on ablate trains the arms only; eval-ablate (the same ARMS) scores them in the next
# command, where training and scoring do not fit one.
#
# SNAP=3min on train or resume also exports the main search's checkpoint as it stands after the stage
# (export-arc-3min), which eval-scale scores with eval-main's settings as the row model-train-3min.
# SNAP_AT="240:4min 420:7min" on train or resume exports it while the search runs, at those seconds
# from the stage's start: the scaling rows from one training command, which pays for compilation
# once (a resumed trial compiles again; on a fresh machine the first compile took about 2 minutes).
# The arc preset checkpoints every iteration (tune.checkpoint_every), so a snapshot is the newest one.
#
# ABLATIONS=0 on eval-main: the main evaluation without --ablations (the searches' rows, which adapt
# three copies a task), then the same checkpoint without adaptation (NOTTA_S seconds) as the row
# model-no-tta: the table's one required ablation at a third of the adaptation work. NOTTA_S=0 leaves
# that row to the stage eval-notta (a later command), where the main evaluation needs the whole command.
#
# EVAL_ARGS="--tta-lr 0.003 0.01" on eval-main, eval-scale and ablate: evaluate's options of the
# stages that share eval-main's settings (the row model and the rows it adds: here model-lr0.003 and
# model-lr0.01, each rate's own copy). Two rates take twice the adaptation: about 500 s on one H100,
# so that eval-scale then scores one snapshot a command: SNAPS="6min" names the snapshots it scores.
#
# SCALE_FINAL=9min on eval-scale also scores the final checkpoint (export-arc) with the snapshots' settings,
# as the row model-train-9min: a scaling table whose every row has the same evaluation, which may be
# cheaper than eval-main's (TTA_STEPS=100 EVAL_ARGS= on eval-scale: one rate, 100 steps a task).
#
# TTA_ARGS="--tta-lr 0.003" TTA_NAME=lr3e-3 on eval-tta: other adaptation settings (evaluate's options),
# scored as the row model-tta<N>-<name>. An export carried to the machine is scored with RUNS set to
# the folder that holds it as export-arc: adaptation settings compared without training again.
#
# PER_GPU=4 on any evaluation stage: four evaluation workers share each GPU (default 2). With four, one
# H100 answered all 399 ARC-AGI-1 evaluation tasks in about 240 s at 400 adaptation steps with 8 colour
# versions (evaluate's default --colours), 10.53% pass@2 (not compared with two on the same machine).
#
# Environment: RUNS (experiment folders; default /root/arc_runs), OUT (results; default ./arc_out),
# TRAIN_S / RESUME_S (time budgets of the two training commands), TTA_STEPS (adaptation steps a task of
# every evaluation stage but eval-tta; default 400, measured above against 200), EVAL_S / NOEMA_S / ARC2_S /
# FIT_S / TTA_MORE_S (evaluation budgets), DRY=1 (the same commands
# on the CPU with tiny models and budgets: what tests the script before a lease; DRY_G=1 as on one GPU).
# bench/arc_results.py turns what comes back into bench/arc_results.json and the table of RESULTS.md.
set -uo pipefail
stage=${1:?usage: bash bench/arc_lease.sh train|resume|eval-main|eval-more|eval-notta|eval-scale|eval-tta|ablate|eval-ablate|scale|pack}
RUNS=${RUNS:-/root/arc_runs}
OUT=${OUT:-$PWD/arc_out}
mkdir -p "$RUNS" "$OUT"
LOG="$OUT/lease.log"
say() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$LOG"; }

if [[ "${DRY:-0}" == 1 ]]; then  # tiny models, few tasks, CPU: the pipeline's logic, not its numbers
  G=${DRY_G:-2}; GPU=0; TRAIN_S=${TRAIN_S:-150}; RESUME_S=${RESUME_S:-70}; TTA_STEPS=${TTA_STEPS:-3}
  TINY=(--set agent.d_model=32 --set agent.num_layers=1 --set agent.num_heads=2 --set prompt.hidden_size=32
        --set prompt.num_layers=1 --set prompt.num_heads=2 --set prompt.num_kv_heads=1
        --set prompt.intermediate_size=64 --set prompt.prompt_dim=32 --set prompt.max_tokens=1024
        --set learner.batch_size=8 --set learner.rehearsal=8 --set learner.precision=fp32
        --set data.max_train_tasks=30 --set data.max_eval_tasks=5 --set rl.train_batch_size=16
        --set rl.minibatch_size=8 --set tune.checkpoint_every=1 --set tune.cpus_per_trial=1 --set env.action_dim=8)
  RES=(--gpus-per-trial 0 --num-cpus 2); EVAL=(--limit 6 --tta-views 2 --search-steps 2 --search-rounds 2)
  SCALE_ITERS=1
else
  G=$(python3 -c "import torch; print(torch.cuda.device_count())"); GPU=1
  TRAIN_S=${TRAIN_S:-200}; RESUME_S=${RESUME_S:-45}; TTA_STEPS=${TTA_STEPS:-400}
  TINY=(); RES=(); EVAL=(); SCALE_ITERS=1
  ((G >= 1)) || { say "need a GPU, found none"; exit 2; }
fi
if ((G >= 2)); then
  MAIN_GPUS=$(seq -s, 0 $((G - 2)))   # the main search: every GPU but the last
  LAST=$((G - 1))                     # the ablation: no evaluation demonstrations, on the last GPU
else
  MAIN_GPUS=0; LAST=""                # one GPU: the main search alone
fi
ABLATION=(--set data.transductive=false --set data.eval_source=synthetic-eval --set tune.num_samples=1
          --set learner.agent_lr=0.002 --set learner.qwen_lr=0.0003 --set learner.reward_scale=5)
sets=(); for kv in ${SETS:-}; do sets+=(--set "$kv"); done
for at in ${SNAP_AT:-}; do  # checked before any search starts
  [[ "$at" =~ ^[0-9]+:[A-Za-z0-9_-]+$ ]] || { say "SNAP_AT: bad entry '$at' (SECONDS:NAME)"; exit 2; }
done
TTA_MORE=${TTA_MORE:-600}  # eval-tta's adaptation steps a task
NOTTA_S=${NOTTA_S:-60}     # the no-adaptation row's budget (eval-main with ABLATIONS=0, eval-notta); 0: not in eval-main
[[ "$NOTTA_S" =~ ^[0-9]+$ ]] || { say "NOTTA_S: '$NOTTA_S' is not a whole number of seconds"; exit 2; }
[[ "$NOTTA_S" != 0 || "$stage" != eval-notta ]] || { say "NOTTA_S: 0 gives eval-notta no time"; exit 2; }
[[ -z "${SCALE_FINAL:-}" || "$SCALE_FINAL" =~ ^[0-9]+min$ ]] || { say "SCALE_FINAL: '$SCALE_FINAL' must name the final checkpoint's training minutes, e.g. 9min"; exit 2; }
[[ -z "${SCALE_FINAL:-}" || ! -d "$RUNS/export-arc-$SCALE_FINAL" ]] || { say "SCALE_FINAL: $SCALE_FINAL names a snapshot too"; exit 2; }
[[ "$TTA_MORE" =~ ^[1-9][0-9]*$ ]] || { say "TTA_MORE: '$TTA_MORE' is not a positive whole number"; exit 2; }
if [[ -n "${TTA_ARGS:-}" || -n "${TTA_NAME:-}" ]]; then  # eval-tta with other adaptation settings, named
  [[ "${TTA_NAME:-}" =~ ^[A-Za-z0-9_.-]+$ ]] || { say "TTA_NAME: '${TTA_NAME:-}' must name TTA_ARGS's row (letters, digits, _ . or -)"; exit 2; }
  [[ -n "${TTA_ARGS:-}" ]] || { say "TTA_NAME: '$TTA_NAME' given without TTA_ARGS"; exit 2; }
fi
TTA_RUN=arc1-eval-tta$TTA_MORE${TTA_NAME:+-$TTA_NAME}  # its folder; the row is model-tta<N>[-<name>]
dev() { if ((GPU)); then echo "CUDA_VISIBLE_DEVICES=$1"; else echo "CUDA_VISIBLE_DEVICES="; fi; }
# tune GPUS ARGS...: python -m efe_ray.tune on those GPUs (a comma-separated list), in $RUNS, no dashboard
tune() { local gpus=$1; shift; env $(dev "$gpus") python3 -m efe_ray.tune --storage-path "$RUNS" --no-dashboard "$@"; }
ok() { [[ $1 == 0 || $1 == 124 ]]; }  # 124: the time budget ended the search, which --resume continues
PER_GPU=${PER_GPU:-2}  # evaluation workers per GPU (each takes 1/PER_GPU of a GPU)
[[ "$PER_GPU" =~ ^[1-9][0-9]*$ ]] || { say "PER_GPU: '$PER_GPU' is not a positive whole number"; exit 2; }
share() {
  if ((GPU)); then echo "--gpus-per-task $(python3 -c "print(1 / $PER_GPU)") --workers $((PER_GPU * G))"
  else echo "--workers 0"; fi
}
# evaluate CHECKPOINT SPLIT OUTNAME TTA_STEPS SECONDS [options]: on every GPU; the model's predictions stop
# after SECONDS (tasks not answered by then are errors that score 0, and the report is still written);
# `timeout` is the backstop that keeps a stage inside its device command.
evaluate() {
  local ckpt=$1 split=$2 name=$3 steps=$4 limit=$5; shift 5
  env $(dev "$(seq -s, 0 $((G - 1)))") timeout $((limit + 120)) python3 -m efe_ray.evaluate --quiet \
    --checkpoint "$ckpt" --split "$split" --tta-steps "$steps" --time-budget-s "$limit" "${EVAL[@]}" $(share) \
    --out "$OUT/$name" "$@" > "$OUT/eval_$name.log" 2>&1
}
# no_tta: the final checkpoint without adaptation, NOTTA_S seconds (the row model-no-tta)
no_tta() { evaluate "$RUNS/export-arc" arc1-eval arc1-eval-no-tta 0 "$NOTTA_S" --drop-leaked; }
# snapshot [NAME]: the main search's checkpoint as it stands, exported as export-arc-NAME (a
# compute-scaling row); NAME defaults to $SNAP, and without either nothing is exported
snapshot() {
  local name=${1:-${SNAP:-}}
  [[ -n "$name" ]] || return 0
  python3 -m efe_ray.export --checkpoint "$RUNS/arc" --out "$RUNS/export-arc-$name" --dtype bf16 2>&1 | tee -a "$LOG"
  say "snapshot $name: exit ${PIPESTATUS[0]}, $(python3 -c 'import json, sys; m = json.load(open(sys.argv[1]))
print("iteration", m["progress"]["training_iteration"], "trial seconds", round(m["progress"]["time_total_s"]),
      "learner steps", m["steps"])' "$RUNS/export-arc-$name/efe_meta.json" 2>&1)"
}
# snapshots_during PID: the SNAP_AT snapshots ("SECONDS:NAME ...", counted from the stage's start) taken
# while the search PID runs; one not yet due when the search ends is not taken (it is named)
snapshots_during() {
  local pid=$1 at
  for at in ${SNAP_AT:-}; do
    while kill -0 "$pid" 2>/dev/null && (( $(date +%s) - started < ${at%%:*} )); do sleep 2; done
    kill -0 "$pid" 2>/dev/null || { say "snapshot ${at#*:}: not taken (the search ended first)"; continue; }
    snapshot "${at#*:}"
  done
}
# searches STAGE: the main search (main_args) on MAIN_GPUS and, with two or more GPUs, the no-transduction
# ablation (abl_args) on the last, at once; the SNAP_AT snapshots while the main one runs, then the SNAP
# one; logs STAGE_main.log and STAGE_ablation.log. Succeeds where both ended well or by their budgets.
searches() {
  local stage=$1 main abl rc_main rc_abl=0
  tune "$MAIN_GPUS" "${main_args[@]}" > "$OUT/${stage}_main.log" 2>&1 &
  main=$!
  if [[ -n "$LAST" ]]; then
    tune "$LAST" "${abl_args[@]}" > "$OUT/${stage}_ablation.log" 2>&1 &
    abl=$!
  fi
  snapshots_during $main
  wait $main; rc_main=$?; [[ -z "$LAST" ]] || { wait $abl; rc_abl=$?; }
  say "$stage: main exit $rc_main${LAST:+, ablation exit $rc_abl}"; tail -n 12 "$OUT/${stage}_main.log" | tee -a "$LOG"
  snapshot
  ok $rc_main && ok $rc_abl
}
# score_arms: each arm of ARMS exported (export-ablate-NAME) and scored with eval-main's settings on the first
# ABLATE_LIMIT tasks in ABLATE_EVAL_S seconds (the row model-ablate-NAME); fails if any arm did
score_arms() {
  local arm name r rc=0
  for arm in "${arms[@]}"; do
    name=${arm%%:*}
    python3 -m efe_ray.export --checkpoint "$RUNS/ablate-$name" --out "$RUNS/export-ablate-$name" --dtype bf16 \
      > "$OUT/export_ablate-$name.log" 2>&1 || { rc=1; say "  arm $name: export failed"; continue; }
    evaluate "$RUNS/export-ablate-$name" arc1-eval "arc1-eval-ablate-$name" "$TTA_STEPS" "$ABLATE_EVAL_S" \
      --limit ${ABLATE_LIMIT:-100} --drop-leaked ${EVAL_ARGS:-}
    r=$?; [[ $r == 0 || $r == 4 ]] || rc=$r
    tail -n 4 "$OUT/eval_arc1-eval-ablate-$name.log" | tee -a "$LOG"
  done
  return $rc
}
if [[ "$stage" == ablate || "$stage" == eval-ablate ]]; then  # every arm checked before any starts
  arms=(${ARMS:-})
  ((${#arms[@]})) || { say "ARMS: none given (space-separated NAME:key=value,... arms, e.g. \"base: no-warmup:learner.warmup_steps=0\")"; exit 2; }
  for arm in "${arms[@]}"; do
    [[ "${arm%%:*}" =~ ^[A-Za-z0-9_-]+$ && "$arm" == *:* ]] || { say "ARMS: bad arm '$arm' (NAME:key=value,...)"; exit 2; }
  done
fi
ABLATE_EVAL_S=${ABLATE_EVAL_S:-90}  # each arm's evaluation budget; 0 on ablate: the arms are scored by eval-ablate
[[ "$ABLATE_EVAL_S" =~ ^[0-9]+$ ]] || { say "ABLATE_EVAL_S: '$ABLATE_EVAL_S' is not a whole number of seconds"; exit 2; }
[[ "$ABLATE_EVAL_S" != 0 || "$stage" != eval-ablate ]] || { say "ABLATE_EVAL_S: 0 gives eval-ablate no time"; exit 2; }
started=$(date +%s)
# Every stage's wall time and GPU count, for the GPU-minutes of bench/arc_results.py.
trap 'echo "{\"stage\": \"$stage\", \"seconds\": $(( $(date +%s) - started )), \"gpus\": $G}" >> "$OUT/stages.jsonl"' EXIT

case $stage in
train)
  say "train: main search on GPUs $MAIN_GPUS ($((G > 1 ? G - 1 : 1)) trials), ${LAST:+ablation on GPU $LAST, }${TRAIN_S}s${SETS:+, --set $SETS}"
  main_args=(--preset arc --name arc --num-samples $((G > 1 ? G - 1 : 1)) --time-budget-s "$TRAIN_S"
             "${TINY[@]}" "${RES[@]}" "${sets[@]}")
  abl_args=(--preset arc --name arc-no-transduction --time-budget-s "$TRAIN_S" "${ABLATION[@]}" "${TINY[@]}" "${RES[@]}")
  searches train ;;
resume)
  say "resume: the searches continue for ${RESUME_S}s"
  main_args=(--resume --name arc --time-budget-s "$RESUME_S")
  abl_args=(--resume --name arc-no-transduction --time-budget-s "$RESUME_S")
  searches resume ;;
scale)
  # Trials per hour of the arc search: G trials on G GPUs at once, then 2 trials one after the other on one.
  all=$(seq -s, 0 $((G - 1)))
  t0=$(date +%s.%N)
  tune "$all" --preset arc --name scale-all \
    --num-samples "$G" --iterations "$SCALE_ITERS" "${TINY[@]}" "${RES[@]}" > "$OUT/scale_all.log" 2>&1; rc1=$?
  t1=$(date +%s.%N)
  tune 0 --preset arc --name scale-one \
    --num-samples 2 --iterations "$SCALE_ITERS" "${TINY[@]}" "${RES[@]}" > "$OUT/scale_one.log" 2>&1; rc2=$?
  t2=$(date +%s.%N)
  python3 - "$G" "$t0" "$t1" "$t2" "$rc1" "$rc2" <<'PY' | tee -a "$LOG" "$OUT/scale.json"
import json, sys
g, t0, t1, t2, rc1, rc2 = int(sys.argv[1]), *map(float, sys.argv[2:5]), int(sys.argv[5]), int(sys.argv[6])
all_rate, one_rate = g / (t1 - t0) * 3600, 2 / (t2 - t1) * 3600
print(json.dumps({"gpus": g, "trials_all": g, "seconds_all": round(t1 - t0, 1), "trials_one": 2,
                  "seconds_one": round(t2 - t1, 1), "trials_per_hour_all": round(all_rate, 1),
                  "trials_per_hour_one": round(one_rate, 1), "ratio": round(all_rate / one_rate, 2),
                  "exit_codes": [rc1, rc2]}))
PY
  [[ $rc1 == 0 && $rc2 == 0 ]] ;;
eval-main)
  set -e
  for name in arc arc-no-transduction; do
    [[ -d "$RUNS/$name" ]] || continue
    python3 -m efe_ray.export --checkpoint "$RUNS/$name" --out "$RUNS/export-$name" --dtype bf16 2>&1 | tee -a "$LOG"
  done
  if grep -q '"ema_weights": true' "$RUNS/export-arc/efe_meta.json"; then  # the average's ablation
    python3 -m efe_ray.export --checkpoint "$RUNS/arc" --out "$RUNS/export-arc-trained" --dtype bf16 \
      --weights trained 2>&1 | tee -a "$LOG"
  fi
  set +e
  if [[ "${ABLATIONS:-1}" == 1 ]]; then
    say "eval-main: ARC-AGI-1 evaluation with adaptation, ablations and baselines on $G GPUs"
    evaluate "$RUNS/export-arc" arc1-eval arc1-eval "$TTA_STEPS" ${EVAL_S:-300} --ablations --baselines --drop-leaked \
      ${EVAL_ARGS:-}; rc=$?
  else  # the model and its no-adaptation row alone: a third of the adaptation work of --ablations
    then=", then without adaptation"; [[ "$NOTTA_S" != 0 ]] || then=" (without adaptation: eval-notta)"
    say "eval-main: ARC-AGI-1 evaluation with adaptation and baselines$then, on $G GPUs${EVAL_ARGS:+, $EVAL_ARGS}"
    evaluate "$RUNS/export-arc" arc1-eval arc1-eval "$TTA_STEPS" ${EVAL_S:-300} --baselines --drop-leaked ${EVAL_ARGS:-}; rc=$?
    if [[ "$NOTTA_S" != 0 ]]; then
      no_tta; r=$?
      [[ $r == 0 || $r == 4 ]] || rc=$r
    fi
  fi
  say "eval-main: exit $rc"; tail -n 14 "$OUT/eval_arc1-eval.log" | tee -a "$LOG"
  [[ $rc == 0 || $rc == 4 ]] ;;
eval-tta)  # more adaptation: the final checkpoint with TTA_MORE steps a task (and TTA_ARGS), as the row model-tta<N>[-<name>]
  say "eval-tta: ARC-AGI-1 evaluation with $TTA_MORE adaptation steps a task${TTA_ARGS:+, $TTA_ARGS} on $G GPUs"
  evaluate "$RUNS/export-arc" arc1-eval "$TTA_RUN" "$TTA_MORE" ${TTA_MORE_S:-300} --drop-leaked ${TTA_ARGS:-}; rc=$?
  say "eval-tta: exit $rc"; tail -n 6 "$OUT/eval_$TTA_RUN.log" | tee -a "$LOG"
  [[ $rc == 0 || $rc == 4 ]] ;;
eval-notta)  # the final checkpoint without adaptation, as the row model-no-tta
  say "eval-notta: ARC-AGI-1 evaluation without adaptation on $G GPUs"
  no_tta; rc=$?
  say "eval-notta: exit $rc"; tail -n 6 "$OUT/eval_arc1-eval-no-tta.log" | tee -a "$LOG"
  [[ $rc == 0 || $rc == 4 ]] ;;
eval-more)
  say "eval-more: the no-transduction checkpoint and the training weights on ARC-AGI-1; ARC-AGI-2 evaluation; ARC-AGI-1 training (the fit)"
  r1=0
  if [[ -d "$RUNS/export-arc-no-transduction" ]]; then
    evaluate "$RUNS/export-arc-no-transduction" arc1-eval arc1-eval-no-transduction "$TTA_STEPS" 100 --drop-leaked
    r1=$?
  fi
  r4=0
  if [[ -d "$RUNS/export-arc-trained" ]]; then
    evaluate "$RUNS/export-arc-trained" arc1-eval arc1-eval-no-ema "$TTA_STEPS" ${NOEMA_S:-100} --drop-leaked; r4=$?
  fi
  evaluate "$RUNS/export-arc" arc2-eval arc2-eval "$TTA_STEPS" ${ARC2_S:-80} --baselines --drop-leaked; r2=$?
  evaluate "$RUNS/export-arc" arc1-train arc1-train 0 ${FIT_S:-40} --baselines --allow-leakage; r3=$?
  say "eval-more: exits $r1 $r4 $r2 $r3"
  for f in arc1-eval-no-transduction arc1-eval-no-ema arc2-eval arc1-train; do
    [[ -f "$OUT/eval_$f.log" ]] && tail -n 7 "$OUT/eval_$f.log" | tee -a "$LOG"
  done ;;
ablate)
  say "ablate: ${#arms[@]} arms side by side on GPUs $MAIN_GPUS for ${ABLATE_S:=240}s${SETS:+, --set $SETS}"
  pids=()
  for arm in "${arms[@]}"; do
    name=${arm%%:*}; over=${arm#*:}; extra=()
    for kv in ${over//,/ }; do extra+=(--set "$kv"); done
    say "  arm $name: ${over:-(the recipe)}"
    tune "$MAIN_GPUS" --preset arc --name "ablate-$name" \
      --num-samples 1 --time-budget-s "$ABLATE_S" "${TINY[@]}" "${RES[@]}" "${sets[@]}" "${extra[@]}" \
      > "$OUT/train_ablate-$name.log" 2>&1 &
    pids+=($!)
  done
  rc=0
  for i in "${!arms[@]}"; do wait "${pids[$i]}"; r=$?; ok $r || { rc=$r; say "  arm ${arms[$i]%%:*}: exit $r"; }; done
  if [[ "$ABLATE_EVAL_S" == 0 ]]; then say "ablate: the arms are scored by eval-ablate"
  else score_arms || rc=$?; fi
  [[ $rc == 0 ]] ;;
eval-ablate)  # the arms an earlier ablate stage trained (the same ARMS), scored as ablate scores them
  say "eval-ablate: ${#arms[@]} arms on the first ${ABLATE_LIMIT:-100} ARC-AGI-1 evaluation tasks"
  score_arms ;;
eval-scale)
  say "eval-scale: ARC-AGI-1 evaluation of the snapshots, with eval-main's settings"
  rc=0
  scored=()
  for snap in "$RUNS"/export-arc-*min; do
    [[ -d "$snap" ]] || continue
    name=${snap##*/export-arc-}
    [[ -z "${SNAPS:-}" || " $SNAPS " == *" $name "* ]] || continue
    scored+=("$snap:$name")
  done
  [[ -z "${SCALE_FINAL:-}" ]] || scored+=("$RUNS/export-arc:$SCALE_FINAL")  # the final checkpoint, as a row of its own
  for pair in "${scored[@]}"; do
    name=${pair##*:}
    evaluate "${pair%:*}" arc1-eval "arc1-eval-train-$name" "$TTA_STEPS" ${EVAL_S:-300} --drop-leaked ${EVAL_ARGS:-} || rc=$?
    tail -n 5 "$OUT/eval_arc1-eval-train-$name.log" | tee -a "$LOG"
  done
  [[ $rc == 0 || $rc == 4 ]] ;;
pack)
  # What comes back (at most 8 files of 16 MiB): reports and logs, TensorBoard files, the exports.
  tar czf "$OUT/reports.tgz" -C "$OUT" --exclude='*.tgz' --exclude='submission_*' . 2>/dev/null
  (cd "$RUNS" && find arc arc-no-transduction -name 'events.out.tfevents*' -o -name 'result.json' \
    -o -name 'params.json' 2>/dev/null | tar czf "$OUT/tensorboard.tgz" -T -)
  (cd "$RUNS" && ls -d export-* 2>/dev/null | tar czf "$OUT/exports.tgz" -T -)
  ls -la "$OUT"/*.tgz | tee -a "$LOG" ;;
*) echo "unknown stage $stage" >&2; exit 2 ;;
esac
