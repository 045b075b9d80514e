#!/usr/bin/env bash
# The API against its own OpenAPI document: schemathesis, every check, bounded
# in examples and time, against a daemon this script starts (its own database,
# one probe that checks the daemon's own /healthz, so nothing but loopback is
# touched). Zero failures are required. Called by .ci/run; runs alone too.
#
#   SCHEMATHESIS_PORT      the daemon's port (default 9689)
#   SCHEMATHESIS_VENV      the virtual environment (default /var/tmp/prober-schemathesis-venv)
#   SCHEMATHESIS_EXAMPLES  test cases per operation (default 30)
#   SCHEMATHESIS_TIMEOUT   the whole run's limit in seconds (default 600)
#   SCHEMATHESIS_SEED      the generator's seed (default 1, so a failure reproduces)
#   SCHEMATHESIS_EXTRA     more options, e.g. "--report ndjson --report-dir /tmp/st"
# Every check runs; .ci/schemathesis.toml lists the per-operation exceptions and why.
set -euo pipefail
cd "$(dirname "$0")/.."

version=4.32.5
port="${SCHEMATHESIS_PORT:-9689}"
venv="${SCHEMATHESIS_VENV:-/var/tmp/prober-schemathesis-venv}"
examples="${SCHEMATHESIS_EXAMPLES:-30}"
limit="${SCHEMATHESIS_TIMEOUT:-600}"
db=prober_ci_schemathesis
token="schemathesis-$(date +%s)-$$"

# python3 -m venv needs Debian's python3-venv (ensurepip).
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$version"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$version"
fi
"$venv/bin/schemathesis" --version

cargo build --quiet --locked -p prober
bin="$(realpath "${CARGO_TARGET_DIR:-target}")/debug/prober"

work=$(mktemp -d)
log="$work/daemon.log"
mkdir "$work/probes"
cat >"$work/probes/self.yaml" <<EOF
name: self
labels:
  team: ci
every: 5s
timeout: 2s
http:
  url: http://127.0.0.1:$port/healthz
expect:
  status: 200
EOF

psql_q() { PGOPTIONS="-c client_min_messages=warning" psql -h 127.0.0.1 -U postgres -qc "$1" postgres; }
psql_q "drop database if exists $db with (force)"

pid=""
cleanup() {
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -INT "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  psql_q "drop database if exists $db with (force)" || true
  rm -rf "$work"
}
trap cleanup EXIT

# From the scratch directory, so no prober.yaml of the checkout is read.
(cd "$work" && DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" PROBER_API_TOKEN="$token" \
  exec "$bin" run --probes "$work/probes" --listen "127.0.0.1:$port") >"$log" 2>&1 &
pid=$!
ready=""
for _ in $(seq 1 120); do
  if ! kill -0 "$pid" 2>/dev/null; then break; fi
  if curl -fsS --max-time 2 "http://127.0.0.1:$port/readyz" 2>/dev/null | grep -q '"status":"ready"'; then
    ready=yes; break
  fi
  sleep 1
done
if [[ -z "$ready" ]]; then
  echo "the daemon for schemathesis never became ready:"; tail -30 "$log"; exit 1
fi

echo "== schemathesis $version, all checks, $examples examples per operation, at most ${limit}s"
code=0
# From the scratch directory: schemathesis keeps a cache (.schemathesis/) where it runs.
config="$(pwd)/.ci/schemathesis.toml"
(cd "$work" && timeout "$limit" "$venv/bin/schemathesis" --config-file "$config" run "http://127.0.0.1:$port/api/v1/openapi.json" \
  --max-examples "$examples" --seed "${SCHEMATHESIS_SEED:-1}" --workers 1 \
  --generation-database none --no-color ${SCHEMATHESIS_EXTRA:-} \
  -H "Authorization: Bearer $token") || code=$?
if [[ "$code" != 0 ]]; then
  echo "schemathesis failed (exit $code; 124 is the time limit); the daemon's last lines:"
  tail -20 "$log"
  exit 1
fi
