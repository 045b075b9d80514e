#!/bin/sh
# Side-by-side benchmark: prober against Debian's prometheus-blackbox-exporter,
# same loopback target, same rates, one run, one table (BENCHMARKS.md explains
# every figure). Needs PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres);
# it DROPS and recreates the databases prober_bench and prober_bench_history.
#
#   bench/side-by-side.sh                       # everything (≈ 15 min, +5 min seeding)
#   bench/side-by-side.sh --phases cpu,accuracy # a subset; any `prober-bench` option passes through
#
# The table is saved in bench/results/ and written into BENCHMARKS.md between
# the side-by-side markers (set NO_WRITE=1 to skip that).
set -eu
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# blackbox_exporter from Debian (the package also enables a service on :9115;
# the bench starts its own instance on a free port and measures only that one).
if [ ! -x /usr/bin/prometheus-blackbox-exporter ]; then
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        prometheus-blackbox-exporter
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust (https://rustup.rs) first" >&2
    exit 2
fi

# The benchmark is its own workspace member; it runs the daemon in-process
# (and its phases as child prober-bench processes), so only it is built.
cargo build --release -p prober-bench
bin="${CARGO_TARGET_DIR:-target}/release/prober-bench"

mkdir -p bench/results
stamp=$(date -u +%Y-%m-%dT%H:%M:%SZ)
out="bench/results/side-by-side-$(date -u +%Y%m%dT%H%M%SZ).md"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain 2>/dev/null | grep -q . && echo " plus uncommitted changes" || true)
{
    echo "Run of $stamp, commit $commit$dirty, \`bench/side-by-side.sh $*\`:"
    echo
    RUST_LOG="${RUST_LOG:-warn,sqlx=error}" "$bin" --side-by-side "$@"
} | tee "$out.tmp"
mv "$out.tmp" "$out"
echo "saved $out" >&2

if [ "${NO_WRITE:-0}" != 1 ] && grep -q '<!-- side-by-side:begin -->' BENCHMARKS.md; then
    awk -v table="$out" '
        /<!-- side-by-side:begin -->/ { print; while ((getline line < table) > 0) print line; skip = 1; next }
        /<!-- side-by-side:end -->/   { skip = 0 }
        !skip { print }
    ' BENCHMARKS.md > BENCHMARKS.md.tmp && mv BENCHMARKS.md.tmp BENCHMARKS.md
    echo "wrote the table into BENCHMARKS.md" >&2
fi
