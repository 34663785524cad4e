#!/usr/bin/env bash
# tests/dist/mpi_check.sh - multi-rank training through mpirun: ranks vs threads parity, resume
# across ranks, a killed / stalled / frozen rank, mismatched config across ranks, uneven shards,
# rank 0 alone writes and prints, no sanitizer report, and rank 0 killed mid-save.
#   usage: mpi_check.sh TEST_NNC MPI_NNC REF_NNC
#     TEST_NNC  the MPI build with fault hooks (build/mpi/test/nnc)
#     MPI_NNC   the MPI release build (build/mpi/nnc)
#     REF_NNC   the threads-only build (build/nnc): the reference for the ranks vs threads parity
# Data: the Debian fashion-mnist package, 300-2000 images, the "tiny" model: each run takes
# about a second. Every launch is bounded by `timeout`. Prints one line per check; exits 1 if
# any check failed. Work folder: $MPI_CHECK_DIR (default: a fresh mktemp -d, removed on success).
set -u
TEST_NNC=$(realpath "$1")
MPI_NNC=$(realpath "$2")
REF_NNC=$(realpath "$3")
HERE=$(cd "$(dirname "$0")" && pwd)
DIGEST="python3 $HERE/ckpt_digest.py"
W=${MPI_CHECK_DIR:-$(mktemp -d /tmp/nnc-mpi-check.XXXXXX)}
mkdir -p "$W" && cd "$W" || exit 2
MPIRUN=(mpirun --oversubscribe --bind-to none)
[ "$(id -u)" = 0 ] && MPIRUN+=(--allow-run-as-root)
[ -n "${ASAN_OPTIONS:-}" ] && MPIRUN+=(-x ASAN_OPTIONS)
DATA=(fashion-mnist --model tiny --batch 16 --limit-test 64 --threads 1)
FAILS=0
T0=$(date +%s.%N)

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1"; FAILS=$((FAILS + 1)); }
now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc; }
# digest of every section of a checkpoint but run/meta (first line of ckpt_digest.py)
dig() { $DIGEST "$1" 2>/dev/null | head -1 | cut -d' ' -f1; }
center() { $DIGEST "$1" 2>/dev/null | sed -n 's/^center //p'; }
run_mpi() { # NP BIN ARGS... (output in $OUT)
    local np=$1 bin=$2
    shift 2
    timeout 120 "${MPIRUN[@]}" -np "$np" "$bin" train "$@" >"$OUT" 2>&1
}
# pid of rank R among the descendants of PID (timeout -> mpirun -> ranks)
rank_pid() {
    local c
    for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        if tr '\0' '\n' <"/proc/$c/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
            echo "$c"
            return
        fi
        rank_pid "$c" "$2"
    done
}
wait_for() { # FILE SECONDS: until FILE exists
    local i
    for ((i = 0; i < $2 * 20; i++)); do [ -e "$1" ] && return 0; sleep 0.05; done
    return 1
}

# ---- ranks vs threads parity: same total workers and seed, threads-only vs 1, 2, 4 ranks: identical checkpoints ----
# (every worker's parameters and momentum, the center, the EMA and counters: all but run/meta)
for spec in "mgrawa 4 1" "mgrawa 4 2" "mgrawa 4 4" "lgrawa 3 2" "local-sgd 3 2" "easgd 3 2" "lsgd 3 2" \
            "dp 3 2" "dp-sam 2 2"; do
    set -- $spec
    algo=$1 M=$2 np=$3
    args=("${DATA[@]}" --limit-train 300 --algo "$algo" --sync lockstep --tau 3 --workers "$M" --epochs 2)
    ref=ref-$algo-$M
    if [ ! -e "$ref/last.ckpt" ]; then
        timeout 60 "$REF_NNC" train "${args[@]}" --run-dir "$ref" >"$ref.txt" 2>&1 ||
            { fail "ranks vs threads parity, reference $algo: $(tail -1 "$ref.txt")"; continue; }
    fi
    OUT=f1-$algo-$np.txt
    if ! run_mpi "$np" "$MPI_NNC" "${args[@]}" --run-dir "f1-$algo-$np"; then
        fail "ranks vs threads parity $algo M=$M np=$np: rc $? ($(tail -1 "$OUT"))"
        continue
    fi
    a=$(dig "$ref/last.ckpt") b=$(dig "f1-$algo-$np/last.ckpt")
    if [ -n "$a" ] && [ "$a" = "$b" ]; then
        pass "ranks vs threads parity $algo M=$M np=$np: bitwise equal run state, center $(center "$ref/last.ckpt" | cut -c1-16)"
    else
        fail "ranks vs threads parity $algo M=$M np=$np: threads $a vs ranks $b"
    fi
done

# ---- resume across ranks: 1 epoch + --resume to 2 (np 2) equals the same in threads-only ----
args=("${DATA[@]}" --limit-train 300 --algo mgrawa --sync lockstep --tau 3 --workers 4)
timeout 60 "$REF_NNC" train "${args[@]}" --epochs 1 --run-dir rr-ref >/dev/null 2>&1
timeout 60 "$REF_NNC" train "${args[@]}" --epochs 2 --run-dir rr-ref --resume >/dev/null 2>&1
OUT=rr1.txt
run_mpi 2 "$MPI_NNC" "${args[@]}" --epochs 1 --run-dir rr
OUT=rr2.txt
run_mpi 2 "$MPI_NNC" "${args[@]}" --epochs 2 --run-dir rr --resume
a=$(dig rr-ref/last.ckpt) b=$(dig rr/last.ckpt)
[ -n "$a" ] && [ "$a" = "$b" ] && pass "resume np 2: equal to the threads-only resumed run" ||
    fail "resume np 2: $a vs $b ($(tail -1 rr2.txt))"

timeout 60 "$REF_NNC" train "${args[@]}" --epochs 1 --run-dir rx >/dev/null 2>&1
OUT=rx.txt
run_mpi 2 "$MPI_NNC" "${args[@]}" --epochs 2 --run-dir rx --resume
b=$(dig rx/last.ckpt)
[ -n "$a" ] && [ "$a" = "$b" ] && pass "threads-only checkpoint resumed at np 2: equal to the threads-only resumed run" ||
    fail "cross resume: $a vs $b ($(tail -1 rx.txt))"

# ---- mismatched config across ranks (lr, model) -> exit 2 naming rank 1, no hang ----
args=("${DATA[@]}" --limit-train 300 --algo mgrawa --workers 2 --epochs 1 --sync-timeout 10)
k=0
for diff in "--lr 0.05" "--model resnet20"; do
    t=$(now) k=$((k + 1))
    # a folder per case: the refused run leaves its config.json, and a used folder is refused
    timeout 60 "${MPIRUN[@]}" -np 1 "$MPI_NNC" train "${args[@]}" --run-dir f4-$k : -np 1 "$MPI_NNC" train "${args[@]}" \
        --run-dir f4-$k $diff >f4.txt 2>&1
    rc=$? dt=$(elapsed "$t")
    if [ $rc = 2 ] && grep -q "rank 1 runs a different configuration" f4.txt && [ ! -e f4-$k/last.ckpt ]; then
        pass "mismatched config across ranks ($diff on rank 1): exit 2 in ${dt%???????} s naming rank 1"
    else
        fail "mismatched config across ranks ($diff): rc $rc, $(grep -m1 'nnc:' f4.txt)"
    fi
done

# ---- stalled rank: a stalled worker on rank 1 (fault hook), --sync-timeout 1 -> exit 3 naming the round ----
args=("${DATA[@]}" --limit-train 300 --algo mgrawa --sync lockstep --workers 4 --epochs 50 --sync-timeout 1)
OUT=f3.txt
rm -f f3.txt
timeout 60 "${MPIRUN[@]}" -np 2 -x NNC_FAULT=worker_stall:3 "$TEST_NNC" train "${args[@]}" --run-dir f3 >f3.txt 2>&1 &
mp=$!
for ((i = 0; i < 400; i++)); do grep -q "^training" f3.txt 2>/dev/null && break; sleep 0.05; done
t=$(now)
wait $mp
rc=$? dt=$(elapsed "$t")
if [ $rc = 3 ] && grep -q "sync round 1: .*rank 1" f3.txt && [ "$(echo "$dt < 3.0" | bc)" = 1 ]; then
    pass "stalled rank (worker stall hook): exit 3 in ${dt%???????} s (timeout 1 s): $(grep -m1 -o 'sync round 1: rank 0 waited[^(]*' f3.txt)"
else
    fail "stalled rank: rc $rc after $dt s: $(grep -m1 'sync round' f3.txt)"
fi

# ---- frozen rank: rank 1 frozen by SIGSTOP mid-training -> rank 0's deadline, exit 3 ----
timeout 60 "${MPIRUN[@]}" -np 2 "$MPI_NNC" train "${args[@]}" --limit-train 2000 --epochs 500 --run-dir f3b >f3b.txt 2>&1 &
mp=$!
wait_for f3b/last.ckpt 60
victim=$(rank_pid $mp 1)
t=$(now)
[ -n "$victim" ] && kill -STOP "$victim"
wait $mp
rc=$? dt=$(elapsed "$t")
[ -n "$victim" ] && kill -KILL "$victim" 2>/dev/null # mpirun does not reap a stopped rank
if [ -n "$victim" ] && [ $rc = 3 ] && grep -q "sync round [0-9]*: rank 0 waited 1.0 s for rank 1" f3b.txt &&
   [ "$(echo "$dt < 3.0" | bc)" = 1 ]; then
    pass "frozen rank (SIGSTOP): exit 3 in ${dt%???????} s: $(grep -m1 -o 'sync round [0-9]*: rank 0 waited[^(]*' f3b.txt)"
else
    fail "frozen rank: victim '$victim' rc $rc after $dt s: $(grep -m1 'sync round' f3b.txt)"
fi

# ---- killed rank: SIGKILL of rank 1 mid-training -> mpirun non-zero within seconds; --resume continues ----
args=("${DATA[@]}" --limit-train 2000 --algo mgrawa --sync lockstep --workers 4)
timeout 120 "${MPIRUN[@]}" -np 2 "$MPI_NNC" train "${args[@]}" --epochs 500 --run-dir f2 >f2.txt 2>&1 &
mp=$!
wait_for f2/last.ckpt 60
sleep 0.3
victim=$(rank_pid $mp 1)
t=$(now)
[ -n "$victim" ] && kill -KILL "$victim"
wait $mp
rc=$? dt=$(elapsed "$t")
if [ -n "$victim" ] && [ $rc != 0 ] && [ "$(echo "$dt < 5.0" | bc)" = 1 ] && [ -n "$(dig f2/last.ckpt)" ]; then
    pass "killed rank (SIGKILL rank 1): mpirun rc $rc in ${dt%???????} s, last.ckpt complete"
else
    fail "killed rank: victim '$victim' rc $rc after $dt s"
fi
OUT=f2b.txt
run_mpi 2 "$MPI_NNC" "${args[@]}" --epochs 12 --run-dir f2 --resume
rc=$?
if [ $rc = 0 ] && grep -q '"status": "ok"' f2/summary.json && grep -q "^test acc.* 12.00 epochs" f2b.txt; then
    pass "killed rank, relaunch --resume: continued to epoch 12"
else
    fail "killed rank, resume: rc $rc ($(tail -1 f2b.txt))"
fi

# ---- rank 0 killed mid-save: killed while writing last.ckpt (slow writes): the previous file stays valid ----
timeout 120 "${MPIRUN[@]}" -np 2 -x NNC_FAULT=ckpt_slow_write:150 "$TEST_NNC" train "${args[@]}" --epochs 500 \
    --run-dir d7 >d7.txt 2>&1 &
mp=$!
wait_for d7/last.ckpt 60
for ((i = 0; i < 600; i++)); do ls d7/last.ckpt.tmp.* >/dev/null 2>&1 && break; sleep 0.02; done
before=$(dig d7/last.ckpt)
victim=$(rank_pid $mp 0)
ls d7/last.ckpt.tmp.* >/dev/null 2>&1 && mid=1 || mid=0
[ -n "$victim" ] && kill -KILL "$victim"
wait $mp
after=$(dig d7/last.ckpt)
OUT=d7b.txt
run_mpi 2 "$MPI_NNC" "${args[@]}" --epochs 12 --run-dir d7 --resume
rc=$?
if [ $mid = 1 ] && [ -n "$after" ] && [ "$before" = "$after" ] && [ $rc = 0 ]; then
    pass "rank 0 killed mid-save: last.ckpt unchanged and complete (one file, renamed into place), resume ok"
else
    fail "rank 0 killed mid-save: mid-save $mid, digest before '$before' after '$after', resume rc $rc"
fi

# ---- SIGUSR1 to mpirun (forwarded to every rank): stop at an agreed round, checkpoint, exit 130 ----
timeout 120 "${MPIRUN[@]}" -np 2 "$MPI_NNC" train "${args[@]}" --epochs 500 --run-dir si >si.txt 2>&1 &
mp=$!
wait_for si/last.ckpt 60
sleep 0.3
mpid=$(cat /proc/$mp/task/*/children 2>/dev/null | head -1)
t=$(now)
[ -n "$mpid" ] && kill -USR1 "$mpid"
wait $mp
rc=$? dt=$(elapsed "$t")
st=$(grep -o '"status": "[a-z]*"' si/summary.json 2>/dev/null)
OUT=si2.txt
run_mpi 2 "$MPI_NNC" "${args[@]}" --epochs 12 --run-dir si --resume
rc2=$?
if [ $rc = 130 ] && [ "$st" = '"status": "interrupted"' ] && [ $rc2 = 0 ] && grep -q '"status": "ok"' si/summary.json; then
    pass "SIGUSR1 to mpirun: exit 130 in ${dt%???????} s with a checkpoint, --resume finished"
else
    fail "SIGUSR1: rc $rc, summary $st, resume rc $rc2 ($(tail -1 si2.txt))"
fi
# SIGINT to mpirun: Open MPI kills the ranks 1 s after a SIGTERM; the job ends non-zero and
# whatever last.ckpt exists is complete.
timeout 120 "${MPIRUN[@]}" -np 2 "$MPI_NNC" train "${args[@]}" --epochs 500 --run-dir sj >sj.txt 2>&1 &
mp=$!
wait_for sj/last.ckpt 60
sleep 0.3
kill -INT $mp
wait $mp
rc=$?
[ $rc != 0 ] && [ -n "$(dig sj/last.ckpt)" ] && pass "SIGINT to mpirun: rc $rc, last.ckpt complete" ||
    fail "SIGINT: rc $rc, last.ckpt digest '$(dig sj/last.ckpt)'"

# ---- uneven shards: uneven split (3 workers on 2 ranks), async, a time budget: both ranks end together ----
OUT=f5.txt
t=$(now)
run_mpi 2 "$MPI_NNC" "${DATA[@]}" --limit-train 2000 --algo mgrawa --sync async --workers 3 --epochs 0 \
    --time-budget 2 --run-dir f5
rc=$? dt=$(elapsed "$t")
if [ $rc = 0 ] && grep -q '"status": "ok"' f5/summary.json && [ "$(echo "$dt < 15" | bc)" = 1 ]; then
    pass "uneven shards, async, 3 workers on 2 ranks, 2 s budget: finished in ${dt%???????} s ($(grep -o 'rounds [0-9]*' f5.txt))"
else
    fail "uneven shards, time budget: rc $rc after $dt s ($(tail -1 f5.txt))"
fi
OUT=f5b.txt
run_mpi 2 "$MPI_NNC" "${DATA[@]}" --limit-train 330 --batch 8 --algo lgrawa --sync async --workers 3 --epochs 2 --run-dir f5b
rc=$?
[ $rc = 0 ] && pass "uneven shards, async epochs (330 images / 3 workers, batch 8): finished" ||
    fail "uneven shards, epochs: rc $rc ($(tail -1 f5b.txt))"

# ---- rank 0 alone writes and prints: only rank 0 writes the run folder and prints ----
mkdir -p f7 && cd f7 || exit 2
OUT=../f7.txt
run_mpi 2 "$MPI_NNC" "${DATA[@]}" --limit-train 300 --algo easgd --sync lockstep --workers 2 --epochs 4 --keep 2 2>../f7.err
rc=$?
cd ..
n=$(ls f7/runs 2>/dev/null | wc -l) lines=$(grep -c "^training tiny" f7.txt) fin=$(grep -c "^test acc" f7.txt)
ep=$(cd f7/runs/* 2>/dev/null && ls epoch-*.ckpt 2>/dev/null | tr '\n' ' ')
ep1=$(cd f7/runs/* 2>/dev/null && ls epoch-*.ckpt 2>/dev/null | head -1)
if [ "$ep" = "epoch-0003.ckpt epoch-0004.ckpt " ] && [ -n "$(dig f7/runs/*/"$ep1")" ]; then
    pass "--keep 2 over 2 ranks: rank 0 rotates ($ep)"
else
    fail "--keep 2: epoch files '$ep'"
fi
ctl=$(grep -c $'\r\|\e' f7.txt)
if [ $rc = 0 ] && [ "$n" = 1 ] && [ "$lines" = 1 ] && [ "$fin" = 1 ] && [ "$ctl" = 0 ]; then
    pass "rank 0 alone writes and prints: one run folder, one header and one result line from 2 ranks, no terminal codes"
else
    fail "rank 0 alone writes and prints: rc $rc, $n run folders, $lines headers, $fin result lines, $ctl lines with CR/ESC"
fi

# ---- no sanitizer report (sanitizer builds): no report in any rank's output ----
if grep -l "ERROR: AddressSanitizer\|runtime error:\|ERROR: LeakSanitizer" ./*.txt ./*.err ./*/*.txt >/dev/null 2>&1; then
    fail "sanitizer reports in: $(grep -l 'ERROR: AddressSanitizer\|runtime error:' ./*.txt ./*.err 2>/dev/null | tr '\n' ' ')"
else
    pass "no sanitizer report in any rank's output"
fi

echo "mpi_check: $FAILS failed, $(elapsed "$T0" | cut -d. -f1) s, work folder $W"
[ $FAILS = 0 ] && [ -z "${MPI_CHECK_DIR:-}" ] && rm -rf "$W"
[ $FAILS = 0 ]
