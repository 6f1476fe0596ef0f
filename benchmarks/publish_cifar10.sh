#!/usr/bin/env bash
# How <arch>.cifar10 and <arch>.cifar10_lin are produced from a `macrl train` run, end to end (arch: the run's).
#   bash benchmarks/publish_cifar10.sh runs/tiny_c10 ../shared/data/cifar10-jpeg.tar.xz
#   FP16=1 bash benchmarks/publish_cifar10.sh runs/gpu_h200/small ../shared/data/cifar10-jpeg.tar.xz macrl_vit_small_p4_cifar
#   FT_EPOCHS=5 bash benchmarks/publish_cifar10.sh ...   # also fine-tune for 5 epochs (tiny: ~16 min/epoch, 2 CPUs)
# A fine-tune result in $RUN/finetune.json newer than the checkpoint (i.e. of these weights) goes on the cards too.
# The pretraining command itself is on the model card (and in runs/.../config.json).
set -euo pipefail
RUN=${1:-runs/tiny_c10}
DATA=${2:-../shared/data/cifar10-jpeg.tar.xz}
NAME=${3:-macrl_vit_tiny_p4_cifar}.cifar10
FT_EPOCHS=${FT_EPOCHS:-0}
FP16=${FP16:-0}  # 1: store the weights in fp16 (loading still gives fp32 modules); for encoders over ~50 MB in fp32
HALF=(); [ "$FP16" = 1 ] && HALF=(--fp16)
CK=$RUN/checkpoint.pth
# 1) the weights, and their sha256 in the registry, so the published name loads them
macrl export "$CK" --name $NAME "${HALF[@]}" --overwrite
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
macrl export "$CK" --name $NAME "${HALF[@]}" --eval-json "${EVALS[@]}" --overwrite
macrl export "$CK" --name ${NAME}_lin "${HALF[@]}" --head "$RUN/head.safetensors" --eval-json "${EVALS[@]}" --overwrite
python benchmarks/register_weights.py $NAME ${NAME}_lin
# 4) the classifier tag measured as it ships (encoder + folded head, through its published name), on its card
macrl eval classify --model ${NAME}_lin --data "$DATA" --json-out "$RUN/classify.json"
macrl export "$CK" --name ${NAME}_lin "${HALF[@]}" --head "$RUN/head.safetensors" --eval-json "${EVALS[@]}" "$RUN/classify.json" \
    --overwrite
python benchmarks/register_weights.py ${NAME}_lin  # unchanged weights: the same sha256
# 5) results/ (one row per published tag, from the cards)
python -m macrl_hub.results
