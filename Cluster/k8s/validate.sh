#!/usr/bin/env bash
# Validates the Kubernetes manifests offline: strict schema validation against the OpenAPI
# schemas of Kubernetes 1.29 and 1.37 (kubernetes-validate bundles them), plus the cross-
# references the API server or kustomize would reject or silently get wrong (validate.py);
# where kubectl is on PATH, also what `kubectl kustomize` renders. Exits non-zero on any problem.
#
#   validate.sh [FILE|DIR …]        default: this directory
#   validate.sh --install           only install the validator (make test does, before it
#                                   builds: the 144 MB install must not run inside the tests)
#
# kubernetes-validate (PyPI, pinned) is installed on first use into a venv under
# ${WEFT_TOOLS_DIR:-REPO/.build/tools}; needs python3 with venv (Debian: python3-venv) or pip.
# WEFT_K8S_VERSIONS overrides the Kubernetes versions (comma-separated, 1.25.0 … 1.37.0).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
pin=kubernetes-validate==1.37.0
tools=${WEFT_TOOLS_DIR:-$root/.build/tools}
env_dir=$tools/kubernetes-validate-1.37.0
py=$env_dir/bin/python
versions=${WEFT_K8S_VERSIONS:-1.29.0,1.37.0}

installed() { [[ -x $py ]] && "$py" -c 'import kubernetes_validate' 2> /dev/null; }

install() {
  local python=${PYTHON:-python3} start=$SECONDS
  command -v "$python" > /dev/null || { echo "validate.sh: needs python3 (apt-get install python3 python3-venv)" >&2; return 1; }
  echo "validate.sh: installing $pin into $env_dir" >&2
  rm -rf "$env_dir"
  if "$python" -m venv "$env_dir" > /dev/null 2>&1 &&
    "$env_dir/bin/python" -m pip install -q --disable-pip-version-check "$pin" >&2; then
    :
  else
    # No venv module (Debian's python3 without python3-venv): a plain --target install, which
    # PEP 668 allows, behind a small launcher at the same path.
    rm -rf "$env_dir"
    mkdir -p "$env_dir/bin"
    "$python" -m pip install -q --disable-pip-version-check --target "$env_dir/lib" "$pin" >&2
    printf '#!/bin/sh\nPYTHONPATH=%q exec %q "$@"\n' "$env_dir/lib" "$(command -v "$python")" > "$py"
    chmod +x "$py"
  fi
  installed || { echo "validate.sh: $pin did not install" >&2; return 1; }
  echo "validate.sh: installed in $((SECONDS - start))s" >&2
}

if ! installed; then
  mkdir -p "$tools"
  # Tests may run this in parallel: one installs, the others wait for it.
  exec 9> "$tools/.kubernetes-validate.lock"
  if command -v flock > /dev/null; then flock -w 600 9; fi
  installed || install
  exec 9>&-
fi

[[ ${1:-} == --install ]] && exit 0
(($# > 0)) || set -- "$here"
"$py" "$here/validate.py" "$versions" "$@"

# Where kubectl is installed, also render each kustomization (kustomize is built in) and
# validate what it renders. Not installed by this script.
kubectl=${KUBECTL:-kubectl}
if command -v "$kubectl" > /dev/null; then
  rendered=$(mktemp)
  trap 'rm -f "$rendered"' EXIT
  for arg in "$@"; do
    [[ -f $arg/kustomization.yaml ]] || continue
    "$kubectl" kustomize "$arg" > "$rendered" || { echo "ERROR $arg: kubectl kustomize failed" >&2; exit 1; }
    echo -n "kubectl kustomize $arg: "
    "$py" "$here/validate.py" "$versions" "$rendered"
  done
fi
