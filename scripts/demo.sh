#!/usr/bin/env bash
# The main job end to end on the embedded store: restore → train (once) → export →
# Triton → embed products and movies (graph-aware) → evaluate → recommend movies to the
# demo's users → answer queries. Rerunning gives the same answers.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin

export GRAPHSVC_STORE=${GRAPHSVC_STORE:-var/demo.duckdb}
export GRAPHSVC_INDEX_DIR=${GRAPHSVC_INDEX_DIR:-var/indexes}
export GRAPHSVC_MODEL_REPOSITORY=${GRAPHSVC_MODEL_REPOSITORY:-model_repository}
http_port=${TRITON_HTTP_PORT:-8000}
grpc_port=${TRITON_GRPC_PORT:-8001}
metrics_port=${TRITON_METRICS_PORT:-8002}
export GRAPHSVC_TRITON_URL=grpc://127.0.0.1:$grpc_port
mkdir -p var

step() { printf '\n== %s\n' "$*" >&2; }

step "restore the sample dumps into $GRAPHSVC_STORE"
$bin/jobs restore-dumps arango_dumps/products arango_dumps/movies

checkpoint=checkpoints/graphsage_products.pth.tar
if [ ! -f "$checkpoint" ]; then
  step "train GraphSAGE on the sample products (first run only)"
  $bin/jobs train-graphsage --out "$checkpoint"
fi

# the user tower learns from the demo's users and their ratings (movies dump: users, rated)
tower=checkpoints/user_tower.pt
if [ ! -f "$tower" ]; then
  step "train the user tower on the demo's ratings (first run only; delete $tower to retrain)"
  $bin/jobs train-recommender --users users --ratings rated --out "$tower"
fi

step "export the models into $GRAPHSVC_MODEL_REPOSITORY"
$bin/jobs export-models --checkpoint "$checkpoint" --user-tower "$tower"

step "start Triton (http $http_port, grpc $grpc_port, metrics $metrics_port)"
$bin/graphsvc triton serve --http-port "$http_port" --grpc-port "$grpc_port" --metrics-port "$metrics_port" \
  >var/triton.log 2>&1 &
triton_pid=$!
trap 'kill -TERM $triton_pid 2>/dev/null; wait $triton_pid 2>/dev/null || true' EXIT
# wait for readiness, but give up at once if the server process has died
for _ in $(seq 60); do
  kill -0 $triton_pid 2>/dev/null || { tail -n 20 var/triton.log >&2; exit 1; }
  $bin/graphsvc triton wait --timeout 5 2>/dev/null && break
done
$bin/graphsvc triton wait --timeout 1

step "embed, index and write back (movies graph-aware: their descriptions and directors)"
$bin/jobs embed-products
$bin/jobs embed-movies

step "evaluate the product embeddings (report: var/evaluation/products/index.html)"
$bin/jobs evaluate

step "evaluate the movie embeddings: genre precision@10, graph-aware vs text only (var/evaluation/movies)"
$bin/jobs evaluate movies

step "recommend movies to every user, incrementally (written back as \`recommended\`, published)"
$bin/jobs recommend-users --users users --ratings rated --checkpoint "$tower"

step "graphsvc similar products/P0000042"
$bin/graphsvc similar products/P0000042 --fields category,predicted_category,title

step "graphsvc search movies \"a haunted house on a stormy coast\""
$bin/graphsvc search movies "a haunted house on a stormy coast" --fields title,year,genres

step "graphsvc similar movies/m0001 (graph-aware)"
$bin/graphsvc similar movies/m0001 --fields title,genres

step "graphsvc recommend users/u0003 (a user who likes Crime; what they rated is left out)"
$bin/graphsvc recommend users/u0003 --fields title,genres

step "graphsvc recommend users/u0400 -k 3 (no ratings yet: the most popular movies, marked as such)"
$bin/graphsvc recommend users/u0400 -k 3 --fields title,genres
