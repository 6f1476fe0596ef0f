#!/usr/bin/env bash
# How macrl_vit_tiny_p4_cifar.cifar10 and .cifar10_lin are produced from a `macrl train` run, end to end.
#   bash benchmarks/publish_cifar10_tiny.sh runs/tiny_c10 ../shared/data/cifar10-jpeg.tar.xz
#   FT_EPOCHS=5 bash benchmarks/publish_cifar10_tiny.sh ...   # also fine-tune for 5 epochs (~16 min/epoch, 2 CPUs)
# A fine-tune result in $RUN/finetune.json newer than the checkpoint (i.e. of these weights) goes on the cards too.
# The pretraining command itself is on the model card (and in runs/.../config.json).
set -euo pipefail
RUN=${1:-runs/tiny_c10}
DATA=${2:-../shared/data/cifar10-jpeg.tar.xz}
NAME=macrl_vit_tiny_p4_cifar.cifar10
FT_EPOCHS=${FT_EPOCHS:-0}
CK=$RUN/checkpoint.pth
# 1) the weights, and their sha256 in the registry, so the published name loads them
macrl export "$CK" --name $NAME --overwrite
python benchmarks/register_weights.py $NAME
# 2) every number on the card, measured through the published name (full train bank, full test set):
#    kNN and the linear probe from one feature extraction
macrl eval knn+linear --model $NAME --data "$DATA" --save-head "$RUN/head.safetensors" --json-out "$RUN/eval.json"
#    and, optionally, full fine-tuning of the published encoder (the paper's recipe, FT_EPOCHS epochs)
if [ "$FT_EPOCHS" -gt 0 ]; then
  macrl eval finetune --model $NAME --data "$DATA" --epochs "$FT_EPOCHS" --warmup-epochs 1 \
      --out "$RUN/finetune" --resume --json-out "$RUN/finetune.json"  # --resume: continues a killed one
fi
EVALS=("$RUN/eval.json")
if [ -f "$RUN/finetune.json" ] && [ "$RUN/finetune.json" -nt "$CK" ]; then EVALS+=("$RUN/finetune.json"); fi
# 3) the cards (same weights, same sha), and the classifier tag with the folded linear-probe head
macrl export "$CK" --name $NAME --eval-json "${EVALS[@]}" --overwrite
macrl export "$CK" --name ${NAME}_lin --head "$RUN/head.safetensors" --eval-json "${EVALS[@]}" --overwrite
python benchmarks/register_weights.py $NAME ${NAME}_lin
# 4) the classifier tag measured as it ships (encoder + folded head, through its published name), on its card
macrl eval classify --model ${NAME}_lin --data "$DATA" --json-out "$RUN/classify.json"
macrl export "$CK" --name ${NAME}_lin --head "$RUN/head.safetensors" --eval-json "${EVALS[@]}" "$RUN/classify.json" \
    --overwrite
python benchmarks/register_weights.py ${NAME}_lin  # unchanged weights: the same sha256
