#!/usr/bin/env bash
# Runs the whole test suite. pytest's exit code 5 ("no tests collected") is a failure here.
set -uo pipefail
cd "$(dirname "$0")/../.."
mkdir -p var/test-reports
.venv/bin/python -m pytest "$@" --junitxml=var/test-reports/junit.xml
rc=$?
if [[ $rc -eq 5 ]]; then
  echo "amtrace: pytest collected no tests: treating as failure" >&2
  exit 1
fi
exit $rc
