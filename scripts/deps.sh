#!/usr/bin/env bash
# Installs what pgvigil's dev loop and tests need, and only what is missing:
# Debian packages by name (apt-get update runs only when something is missing),
# and moto[server] and kubernetes-validate from PyPI. Nothing is downloaded from anywhere else.
#   scripts/deps.sh            everything `make test` needs
#   scripts/deps.sh dev        only what `make dev` needs (PostgreSQL)
set -euo pipefail

DEV_PKGS=(postgresql postgresql-contrib)
TEST_PKGS=(postgresql postgresql-contrib pgbouncer prometheus prometheus-alertmanager nginx faketime wrk curl openssl chromium)

case "${1:-test}" in
  dev) pkgs=("${DEV_PKGS[@]}"); want_moto=0 ;;
  test) pkgs=("${TEST_PKGS[@]}"); want_moto=1 ;;
  *) echo "usage: $0 [dev|test]" >&2; exit 2 ;;
esac

sudo_cmd=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "deps: not root and no sudo; install as root: apt-get install ${pkgs[*]}" >&2; exit 1; }
  sudo_cmd=(sudo)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  timeout 600 "${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive timeout 1200 "${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=300 \
    install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# moto 5.2.0/5.2.1 answer CompleteMultipartUpload with the wrong XML root element, which
# the AWS SDK rejects (getmoto/moto#10055): require 5.2.5 or newer.
moto_ok() {
  command -v moto_server >/dev/null 2>&1 || return 1
  python3 - <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
v = tuple(int(x) for x in version("moto").split(".")[:3] if x.isdigit())
sys.exit(0 if v >= (5, 2, 5) else 1)
PY
}
if [ "$want_moto" = 1 ] && ! moto_ok; then
  echo "deps: pip install 'moto[server]>=5.2.5'" >&2
  timeout 900 python3 -m pip install -q -U 'moto[server]>=5.2.5'
fi

# kubernetes-validate checks deploy/kubernetes against the Kubernetes OpenAPI schemas
# (bundled in the package: no network at test time).
if [ "$want_moto" = 1 ] && ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "deps: pip install kubernetes-validate" >&2
  timeout 900 python3 -m pip install -q kubernetes-validate
fi

# --- PostgreSQL majors beyond the host's (pgmajors) -------------------------------------
# The version-sensitive tests run against 15 (host), 17 and 18; 17 and 18 need a newer glibc
# and come from Debian trixie/sid chroots outside the clone (cached; see scripts/pg-chroots.sh).
if [ "$want_moto" = 1 ]; then
  "$(dirname "$0")/pg-chroots.sh"
fi
# --- end PostgreSQL majors -------------------------------------------------------------

# Fail here, with the package to install, rather than deep inside a test.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "deps: PostgreSQL server binaries missing after install" >&2; exit 1; }
echo "deps: ok" >&2
