#!/bin/bash
# The unlearning challenge's forgetting score on the harness's mislabeled setting (seed 0: 45 % of
# class 3's training labels flipped to 8), N models a side, the 4-epoch harness recipe, one method
# after another against one model store (the 2N trainings are made once and reused; a killed run
# resumes). Usage: bash benchmarks/audit_mislabeled.sh STORE [METHOD_LABEL ...]
# Each method's audit.json is copied to benchmarks/results/audit/LABEL_mislabeled_n8.json.
set -euo pipefail
STORE=${1:?usage: audit_mislabeled.sh STORE [LABEL ...]}; shift
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(dirname "$HERE")
N=${N:-8}; JOBS=${JOBS:-2}
mkdir -p "$STORE"
python - "$STORE" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from common import flipped_mnist
store = Path(sys.argv[1])
flipped, _ = flipped_mnist(store / "mnist_flipped_s0.safetensors", 3, 8, 0.45, 0)
(store / "flipped.txt").write_text("".join(f"{int(i)}\n" for i in flipped))
recipe = (Path("configs/harness/mnist_cnn_short.yaml").read_text()
          .replace("dataset: mnist", f"dataset: tensors:{(store / 'mnist_flipped_s0.safetensors').resolve()}"))
(store / "recipe.yaml").write_text(recipe)
PY
[ -f "$STORE/forget.json" ] || gif forget-set --dataset "tensors:$STORE/mnist_flipped_s0.safetensors" \
    --indices "$STORE/flipped.txt" --out "$STORE/forget.json"
declare -A ARGS=(
  [gif_default]="--method gif --scale-criterion repair"
  [gif_masked]="--method gif --target masked --scale-criterion repair"
  [gif_paper]="--method gif --target forget --newton-steps 1 --scale-criterion repair"
  [salun]="--method salun"
  [finetune]="--method finetune"
  [retrain]="--method retrain"
  [unedited]="--method unedited"
)
for label in "${@:-gif_default salun finetune retrain}"; do
  for one in $label; do
    out="$STORE/out-$one"
    # shellcheck disable=SC2086
    gif audit --config "$STORE/recipe.yaml" --forget "$STORE/forget.json" --models "$N" --jobs "$JOBS" \
        --store "$STORE/models" --out-dir "$out" ${ARGS[$one]}
    cp "$out/audit.json" "$ROOT/benchmarks/results/audit/${one}_mislabeled_n$N.json"
  done
done
