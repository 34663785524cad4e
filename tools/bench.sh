#!/bin/sh
# tools/bench.sh - nnc vs PyTorch, side by side (make bench; docs/benchmarking.md is the method).
#   tools/bench.sh [NNC_BINARY]            (default build/nnc)
# Environment: ROUNDS (5), MODELS ("resnet20 vgg16"), THREADS ("1 2"), BATCH (128),
#   WORKERS (4; 0 skips the multi-worker run), WORKER_SECONDS (60),
#   TORCH_FORMAT (channels_last | nchw; default channels_last, PyTorch's best on this machine),
#   PRECISIONS ("fp32 bf16"; bf16 rows need AVX512_BF16 and are left out without it): nnc bench
#     --precision P against PyTorch in FP32 (fp32 rows) or under bfloat16 autocast (bf16 rows),
#   TORCH_BF16 (0; 1 runs PyTorch under bfloat16 autocast in the fp32 rows too - then those
#     ratios are not FP32 vs FP32),
#   PYTHON (python3), TORCH_BENCH (tools/torch_bench.py, next to this script).
# Each round runs, for every model, `nnc bench` at every thread count and then one
# torch_bench.py measurement of the same model at the same thread counts, so both share the
# machine's noise; the table gives medians over rounds and the median of the per-round ratios
# nnc / PyTorch. Then the peak RSS of a 1-thread training process of each (PyTorch:
# torch_bench.py train, NCHW), measured alone. Without PyTorch (python3 cannot import torch)
# the nnc columns are measured and the PyTorch ones print as "-".
set -eu
NNC=${1:-build/nnc}
ROUNDS=${ROUNDS:-5}
MODELS=${MODELS:-"resnet20 vgg16"}
THREADS=${THREADS:-"1 2"}
BATCH=${BATCH:-128}
TORCH_FORMAT=${TORCH_FORMAT:-channels_last}
TORCH_BF16=${TORCH_BF16:-0}
PYTHON=${PYTHON:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)
TORCH_BENCH=${TORCH_BENCH:-$HERE/torch_bench.py}
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT

[ -x "$NNC" ] || { echo "bench: no nnc binary at $NNC (run make first)" >&2; exit 2; }
have_torch=0
if [ ! -f "$TORCH_BENCH" ]; then
    echo "bench: $TORCH_BENCH not found: measuring nnc only" >&2
elif ! "$PYTHON" -c 'import torch' >/dev/null 2>&1; then
    echo "bench: PyTorch is not installed for $PYTHON (import torch failed; apt-get install python3-torch" \
         "or pip install torch): measuring nnc only, the PyTorch columns print as -" >&2
else
    have_torch=1
fi
topts=""
case "$TORCH_FORMAT" in
channels_last) topts="--channels-last" ;;
nchw) ;;
*) echo "bench: TORCH_FORMAT must be channels_last or nchw, found '$TORCH_FORMAT'" >&2; exit 2 ;;
esac
tthreads=$(echo $THREADS | tr ' ' ,)
PRECISIONS=${PRECISIONS:-"fp32 bf16"}
precs=""
for p in $PRECISIONS; do
    if [ "$p" = bf16 ] && ! "$NNC" bench --model tiny --batch 2 --runs 1 --warmup 0 --precision bf16 >/dev/null 2>&1; then
        echo "bench: nnc cannot run --precision bf16 here (no AVX512_BF16): leaving out the bf16 rows" >&2
        continue
    fi
    precs="$precs $p"
done

echo "nnc vs PyTorch ($TORCH_FORMAT), batch $BATCH, $ROUNDS interleaved rounds; $(date -u '+%F %T') UTC; load $(cut -d' ' -f1-3 /proc/loadavg)"
r=1
while [ "$r" -le "$ROUNDS" ]; do
    for m in $MODELS; do
        iters=2
        [ "$m" = vgg16 ] && iters=1
        for p in $precs; do
            for t in $THREADS; do
                # nnc bench runs BLAS single-threaded; the env var also keeps OpenBLAS from starting
                # idle server threads that spin in sched_yield next to the kernel threads.
                line=$(OPENBLAS_NUM_THREADS=1 "$NNC" bench --model "$m" --batch "$BATCH" --threads "$t" --runs 1 \
                    --warmup 2 --iters "$iters" --precision "$p" --json | tail -1)
                echo "nnc $r $line" >>"$OUT"
            done
            if [ "$have_torch" = 1 ]; then
                # One JSON line per (model, mode, threads) on stdout; its own progress goes to stderr.
                pt=$topts
                { [ "$p" = bf16 ] || [ "$TORCH_BF16" = 1 ]; } && pt="$pt --bf16"
                "$PYTHON" "$TORCH_BENCH" bench --models "$m" --threads "$tthreads" --batch "$BATCH" --runs 1 \
                    --warmup 2 --iters "$iters" $pt 2>/dev/null | sed "s/^/torch $r $p /" >>"$OUT"
            fi
        done
    done
    echo "round $r done" >&2
    r=$((r + 1))
done

# Peak resident memory of a training process at 1 thread, each measured alone in its own process
# (PyTorch's import alone takes a few hundred MiB); ru_maxrss of the child, in KiB.
maxrss() { "$PYTHON" -c 'import resource, subprocess, sys
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)' "$@"; }
for m in $MODELS; do
    a=$(OPENBLAS_NUM_THREADS=1 maxrss "$NNC" bench --model "$m" --batch "$BATCH" --threads 1 --runs 1 --warmup 1 --train-only)
    b=-
    [ "$have_torch" = 1 ] && b=$(maxrss "$PYTHON" "$TORCH_BENCH" train --model "$m" --batch "$BATCH" --threads 1 --iters 2)
    echo "mem $m $a $b" >>"$OUT"
done

# Multi-worker throughput: WORKERS MGRAWA workers (1 kernel thread each) against one replica on
# all cores, each trained WORKER_SECONDS through nnc_train (tools/bench_workers.c).
WORKERS=${WORKERS:-4}
if [ "$WORKERS" -gt 0 ]; then
    line=$(OPENBLAS_NUM_THREADS=1 "$NNC" bench --model resnet20 --batch "$BATCH" --workers "$WORKERS" --threads 0 \
        --seconds "${WORKER_SECONDS:-60}" --json | tail -1)
    echo "workers $line" >>"$OUT"
fi

"$PYTHON" - "$OUT" "$TORCH_FORMAT" "$TORCH_BF16" <<'PY'
import json, statistics, sys
nnc, torch = {}, {}
for line in open(sys.argv[1]):
    f = line.split(None, 2)
    if f[0] in ("mem", "workers"):
        continue
    if f[0] == "nnc":
        j = json.loads(f[2])
        p = j.get("precision", "fp32")
        for mode, key in (("train", "train_images_per_sec"), ("infer", "infer_images_per_sec")):
            nnc.setdefault((j["model"], p, mode, j["threads"]), {})[int(f[1])] = j[key]
        nnc.setdefault((j["model"], p, "rss", j["threads"]), {})[int(f[1])] = j["peak_rss_mib"]
    else:
        p, rest = f[2].split(None, 1)
        j = json.loads(rest)
        torch.setdefault((j["model"], p, j["mode"], j["threads"]), {})[int(f[1])] = j["images_per_sec"]
print(f"PyTorch: {sys.argv[2]}; fp32 rows against PyTorch {'bf16 autocast' if sys.argv[3] == '1' else 'fp32'}, "
      "bf16 rows against PyTorch bf16 autocast")
print(f"{'model':9s} {'prec':4s} {'mode':5s} {'thr':>3s} {'nnc img/s':>10s} {'torch img/s':>12s} {'ratio':>6s}  "
      "(ratio = median of per-round nnc/torch)")
for key in sorted(k for k in nnc if k[2] != "rss"):
    a = nnc[key]
    b = torch.get(key, {})
    na = statistics.median(a.values())
    if b:
        nb = statistics.median(b.values())
        ratio = statistics.median(a[r] / b[r] for r in a if r in b and b[r] > 0)
        print(f"{key[0]:9s} {key[1]:4s} {key[2]:5s} {key[3]:3d} {na:10.1f} {nb:12.1f} {ratio:6.2f}")
    else:
        print(f"{key[0]:9s} {key[1]:4s} {key[2]:5s} {key[3]:3d} {na:10.1f} {'-':>12s} {'-':>6s}")
print(f"\n{'model':9s} {'peak RSS of a 1-thread training process':40s} {'nnc MiB':>8s} {'torch MiB':>10s} {'ratio':>6s}")
for line in open(sys.argv[1]):
    f = line.split()
    if f[0] != "mem":
        continue
    a = int(f[2]) / 1024
    b = int(f[3]) / 1024 if f[3] != "-" else None
    tb, ratio = (f"{b:10.0f}", f"{a / b:6.2f}") if b else (f"{'-':>10s}", f"{'-':>6s}")
    print(f"{f[1]:9s} {'':40s} {a:8.0f} {tb} {ratio}")
for line in open(sys.argv[1]):
    if line.startswith("workers "):
        j = json.loads(line.split(None, 1)[1])
        print(f"\n{j['model']}: {j['workers']} {j['algo']} workers ({j.get('threads_per_worker', 1)} thread(s) each) {j['workers_images_per_sec']:.1f} img/s "
              f"aggregate vs one replica on {j['threads']} threads {j['single_images_per_sec']:.1f} img/s = "
              f"{j['ratio']:.3f}x; synchronizer {100 * j['sync_share']:.3f}% of {j['seconds']:.0f} s ({j['rounds']} rounds)")
PY
