#!/usr/bin/env bash
# Run the same mmjax command on every worker of a Cloud TPU VM pod slice.
#
#   TPU_NAME=my-v5e-64 ZONE=us-west4-a [PROJECT=my-proj] [REMOTE_DIR=~/mmjax] \
#     launch/tpu_pod.sh configs/xxact.py /mnt/shared/runs/xxact [--mode=pretrain] [--config.key=value ...]
#
# Every worker runs `python3 -m mmjax.main` in REMOTE_DIR (the checkout, installed with
# `pip install -e .` and a TPU jaxlib beforehand; SETUP=1 runs the pip step first). MMJAX_AUTO_DISTRIBUTED=1 makes
# mmjax call jax.distributed.initialize(), which discovers the pod topology by itself.
# The workdir must be shared by all workers (Filestore/NFS or a gcsfuse mount).
set -euo pipefail

CONFIG="${1:?usage: launch/tpu_pod.sh CONFIG WORKDIR [flags...]}"
WORKDIR="${2:?usage: launch/tpu_pod.sh CONFIG WORKDIR [flags...]}"
shift 2
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
REMOTE_DIR="${REMOTE_DIR:-~/mmjax}"

args=""
for a in --config="$CONFIG" --workdir="$WORKDIR" "$@"; do args+=" $(printf '%q' "$a")"; done
cmd="cd ${REMOTE_DIR} && MMJAX_AUTO_DISTRIBUTED=1 python3 -m mmjax.main${args}"
if [[ "${SETUP:-0}" == 1 ]]; then
  cmd="cd ${REMOTE_DIR} && python3 -m pip install -q -e . && ${cmd#cd ${REMOTE_DIR} && }"
fi

gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" ${PROJECT:+--project "$PROJECT"} \
  --worker=all --command "$cmd"
