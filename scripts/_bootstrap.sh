# Shared by scripts/demo and scripts/test: system prerequisites and the project venv.
# Sourced, not run. Installs only what is missing; apt only when running as root.

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${STREAM_TRAINER_VENV:-$ROOT/.venv}"

need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
if [[ "${STREAM_TRAINER_WITH_PROMETHEUS:-0}" == 1 ]] && ! command -v promtool >/dev/null 2>&1; then
  need_apt+=(prometheus)
fi
if ((${#need_apt[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need_apt[*]} with apt-get" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "missing: ${need_apt[*]} (install them, e.g. with your package manager)" >&2
    exit 1
  fi
fi

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "Python >= 3.11 is required (found $(python3 --version))" >&2
  exit 1
}
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
