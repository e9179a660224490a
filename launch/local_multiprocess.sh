#!/usr/bin/env bash
# Run N mmjax processes on this machine, joined by JAX's multi-process runtime.
#
#   launch/local_multiprocess.sh [-n NUM_PROCESSES] [-c CPU_DEVICES_PER_PROCESS | -g] [-p PORT] -- \
#       --config=configs/xxact.py --workdir=runs/xxact [--mode=...] [--config.key=value ...]
#
#   -n  number of processes (default 2)
#   -c  run on CPU with this many simulated devices per process (testing multi-host on a laptop)
#   -g  one GPU per process (CUDA_VISIBLE_DEVICES=<process id>)
#   -p  coordinator port on localhost (default $MMJAX_COORDINATOR_PORT or 12355)
# Every process runs the same `python -m mmjax.main` command (interpreter: $PYTHON, default python3);
# mmjax.train.mesh reads JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID.
# If any process fails, the others are stopped and the script exits with its status.
set -euo pipefail

NPROC=2
CPU_DEVICES=""
ONE_GPU_EACH=0
PORT="${MMJAX_COORDINATOR_PORT:-12355}"
while getopts "n:c:gp:h" opt; do
  case "$opt" in
    n) NPROC="$OPTARG" ;;
    c) CPU_DEVICES="$OPTARG" ;;
    g) ONE_GPU_EACH=1 ;;
    p) PORT="$OPTARG" ;;
    h) sed -n '2,14p' "$0"; exit 0 ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[[ "${1:-}" == "--" ]] && shift
PYTHON="${PYTHON:-python3}"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup INT TERM

for ((i = 0; i < NPROC; i++)); do
  (
    export JAX_COORDINATOR_ADDRESS="localhost:${PORT}" JAX_NUM_PROCESSES="$NPROC" JAX_PROCESS_ID="$i"
    if [[ -n "$CPU_DEVICES" ]]; then
      export JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=${CPU_DEVICES}"
    fi
    if [[ "$ONE_GPU_EACH" == 1 ]]; then export CUDA_VISIBLE_DEVICES="$i"; fi
    exec "$PYTHON" -m mmjax.main "$@"
  ) &
  pids+=($!)
done

status=0
for ((k = 0; k < NPROC; k++)); do
  if ! wait -n; then
    status=1
    cleanup
  fi
done
exit "$status"
