#!/usr/bin/env bash
# Mutation testing of the crdts core (_dots, _kernel, _aworset, _counters, _codec) against
# the fast property tests, with mutmut (configured in [tool.mutmut] of pyproject.toml).
#
# Too slow for CI: run it on demand, after `pip install -e '.[mutation]'`:
#
#     bash properties/mutation.sh [TIME_LIMIT_SECONDS]      # default 5400
#
# It works in a scratch copy of the tracked files (mutmut writes a mutants/ tree next to
# the sources), prints mutmut's summary, the score, and the diff of every surviving
# mutant, and leaves the shared checkout untouched. JOBS sets the worker count (default 2).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${VENV_BIN:-$root/.venv/bin}"
limit="${1:-5400}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cd "$root"
git ls-files -z -- crdts properties pyproject.toml | xargs -0 cp --parents -t "$work"
cd "$work"

export HYPOTHESIS_PROFILE=ci
status=0
timeout "$limit" "$bin/mutmut" run --max-children "${JOBS:-2}" >mutmut-run.log 2>&1 || status=$?
tail -n 5 mutmut-run.log
if [ "$status" -ne 0 ]; then
    echo "mutmut run ended with status $status (124: the time limit was reached)"
fi

"$bin/mutmut" results --all true >results.txt
echo
echo "== score"
"$bin/python" - results.txt <<'EOF'
import collections
import sys

counts = collections.Counter()
for line in open(sys.argv[1], encoding="utf-8"):
    name, sep, status = line.strip().rpartition(": ")
    if sep:
        counts[status] += 1
total = sum(counts.values())
killed = counts["killed"] + counts["timeout"]
print(dict(sorted(counts.items())))
print(f"killed {killed} of {total} mutants ({100 * killed / max(total, 1):.1f}%)")
EOF

echo
echo "== surviving mutants"
grep -E ': (survived|no tests)$' results.txt | while read -r line; do
    name="${line%%: *}"
    echo "--- $line"
    "$bin/mutmut" show "$name" | sed -n '/^@@/,$p'
done
exit "$status"
