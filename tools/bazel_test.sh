#!/usr/bin/env bash
# Builds every Bazel target and runs the per-backend test suites, offline.
#
# Usage: tools/bazel_test.sh [tensorflow|jax|torch ...]   (default: all three)
#
# Needs Debian's Bazel 4.2.3: apt-get install bazel-bootstrap bazel-rules-java
# bazel-platforms. Python (and keras, TF, JAX, torch, pytest) comes from the
# checkout's .venv, whichever directory the checkout is in.
#
# Environment:
#   PYTHON           interpreter (default: <repo>/.venv/bin/python)
#   BAZEL            bazel command (default: bazel)
#   BAZEL_JOBS       build jobs (default: 1)
#   BAZEL_TEST_JOBS  tests run at once (default: 1)
#   BAZEL_FLAGS      extra flags for both bazel build and bazel test
#   BAZEL_SLOW       "run" (default) runs every target in full; "import" runs
#                    the targets tagged slow (test files with
#                    `pytestmark = pytest.mark.slow`) as import checks only
#                    (`pytest --collect-only`: their deps and imports resolve
#                    under Bazel) and the others in full; "all" runs every
#                    target as an import check. CI uses "all": its pytest
#                    stage has just run every test in full, so what Bazel
#                    adds is that each target's deps and imports resolve.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo}"

python="${PYTHON:-${repo}/.venv/bin/python}"
bazel="${BAZEL:-bazel}"
if [[ ! -x "${python}" ]]; then
  echo "bazel_test: no interpreter at ${python}; create .venv or set PYTHON" >&2
  exit 2
fi
if ! command -v "${bazel}" >/dev/null; then
  echo "bazel_test: ${bazel} not found; apt-get install bazel-bootstrap bazel-rules-java bazel-platforms" >&2
  exit 2
fi

backends=("$@")
if [[ ${#backends[@]} -eq 0 ]]; then
  backends=(tensorflow jax torch)
fi
suites=()
for backend in "${backends[@]}"; do
  case "${backend}" in
    tensorflow | jax | torch) suites+=("//tests:${backend}") ;;
    *)
      echo "bazel_test: unknown backend '${backend}' (tensorflow, jax or torch)" >&2
      exit 2
      ;;
  esac
done

if ! "${python}" tools/bazel/generate_build.py --check; then
  echo "bazel_test: BUILD files are stale; run: python tools/bazel/generate_build.py" >&2
  exit 1
fi

# Bazel's Python launcher starts with `#!/usr/bin/env python`: make that the
# same interpreter as --python_path, even where no `python` is installed.
export PATH="$(dirname "${python}"):${PATH}"

# shellcheck disable=SC2206
flags=(
  --python_path="${python}"
  --jobs="${BAZEL_JOBS:-1}"
  --local_test_jobs="${BAZEL_TEST_JOBS:-1}"
  ${BAZEL_FLAGS:-}
)

"${bazel}" build "${flags[@]}" //...

log="$(mktemp)"
trap 'rm -f "${log}"' EXIT
status=0
case "${BAZEL_SLOW:-run}" in
  run)
    "${bazel}" test "${flags[@]}" "${suites[@]}" 2>&1 | tee "${log}" || status=$?
    ;;
  import)
    "${bazel}" test "${flags[@]}" --test_tag_filters=-slow "${suites[@]}" 2>&1 | tee "${log}" || status=$?
    echo "bazel_test: the slow targets, as import checks (pytest --collect-only):"
    "${bazel}" test "${flags[@]}" --test_tag_filters=slow --test_arg=--collect-only \
      "${suites[@]}" 2>&1 | tee -a "${log}" || status=$?
    ;;
  all)
    echo "bazel_test: every target, as an import check (pytest --collect-only):"
    "${bazel}" test "${flags[@]}" --test_arg=--collect-only "${suites[@]}" 2>&1 | tee "${log}" || status=$?
    ;;
  *)
    echo "bazel_test: BAZEL_SLOW must be run, import or all, got '${BAZEL_SLOW}'" >&2
    exit 2
    ;;
esac

passed="$(grep -cE '^//[^ ]+ +(\(cached\) )?PASSED' "${log}" || true)"
total="$(grep -cE '^//[^ ]+ +(\(cached\) )?(PASSED|FAILED|TIMEOUT|FLAKY|NO STATUS|INCOMPLETE|FAILED TO BUILD)' "${log}" || true)"
echo "bazel_test: ${passed} of ${total} test targets passed (${backends[*]})"
exit "${status}"
