#!/usr/bin/env bash
# The store contract (tests/store/test_contract.py) against a real ArangoDB server:
#
#   GRAPHSVC_TEST_ARANGO_URL=arangodb://root@localhost:8529 ARANGO_PASSWORD=… scripts/arango_contract.sh
#   scripts/arango_contract.sh --container [IMAGE]   # starts ArangoDB 3.12 in docker/podman, then stops it
#
# Each run makes a throw-away database graphsvc_test_<random> on the server and drops it at the
# end. Only the ArangoDB half of the contract runs; a skip (no server) is a failure here.
# Extra pytest arguments go after `--`: scripts/arango_contract.sh -- -x -k upsert
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
image=arangodb/arangodb:3.12.6
container=""
pytest_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --container) container=graphsvc-arango-contract-$$
                 if [ $# -gt 1 ] && [ "${2#-}" = "$2" ]; then image=$2; shift; fi ;;
    --) shift; pytest_args=("$@"); break ;;
    *) echo "usage: $0 [--container [IMAGE]] [-- PYTEST_ARGS…]" >&2; exit 2 ;;
  esac
  shift
done

if [ -n "$container" ]; then
  engine=$(command -v docker || command -v podman || true)
  [ -n "$engine" ] || { echo "error: --container needs docker or podman on PATH" >&2; exit 2; }
  port=${ARANGO_PORT:-8529}
  export ARANGO_PASSWORD=${ARANGO_PASSWORD:-graphsvc-contract}
  # --vector-index from 3.12.6 (--experimental-vector-index on 3.12.4 and 3.12.5)
  version=${image##*:}
  case "$version" in 3.12.4*|3.12.5*) vector_option=--experimental-vector-index ;; *) vector_option=--vector-index ;; esac
  "$engine" run -d --rm --name "$container" -p "127.0.0.1:$port:8529" \
    -e ARANGO_ROOT_PASSWORD="$ARANGO_PASSWORD" "$image" "$vector_option" >/dev/null
  trap '"$engine" stop "$container" >/dev/null 2>&1 || true' EXIT
  export GRAPHSVC_TEST_ARANGO_URL="arangodb://root@127.0.0.1:$port"
  for _ in $(seq 120); do
    curl -fsS -u "root:$ARANGO_PASSWORD" "http://127.0.0.1:$port/_api/version" >/dev/null 2>&1 && break
    sleep 1
  done
fi

if [ -z "${GRAPHSVC_TEST_ARANGO_URL:-}" ]; then
  echo "error: GRAPHSVC_TEST_ARANGO_URL is not set — give a server (arangodb://root@host:8529, password in ARANGO_PASSWORD) or use --container" >&2
  exit 2
fi
echo "contract suite against $GRAPHSVC_TEST_ARANGO_URL" >&2
report=$(mktemp); trap 'rm -f "$report"; [ -z "$container" ] || "$engine" stop "$container" >/dev/null 2>&1 || true' EXIT
set +e
"$python" -m pytest -q -rs -k arangodb tests/store/test_contract.py "${pytest_args[@]}" | tee "$report"
status=${PIPESTATUS[0]}
set -e
if grep -q "^SKIPPED" "$report"; then
  echo "error: contract tests were skipped — is the server reachable at $GRAPHSVC_TEST_ARANGO_URL?" >&2
  exit 1
fi
exit "$status"
