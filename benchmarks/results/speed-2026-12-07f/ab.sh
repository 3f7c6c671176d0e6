#!/bin/bash
# usage: ab.sh ROUNDS UNITS CAPS ONLY WORKERS
for r in $(seq 1 $1); do
  for side in before after; do
    if [ $side = before ]; then cd /tmp/before; export PYTHONPATH=/tmp/before; else cd /work/main; export PYTHONPATH=/work/main; fi
    echo "== $side round $r"
    python benchmarks/matrix.py --units $2 --only $4 --caps $3 --workers $5 $6 2>&1 | grep -E "units/s|web CPU"
  done
done
