#!/usr/bin/env bash
# Prints the Debian mirror the machine's own apt sources name (deb822 .sources first, then
# sources.list; a -security suffix stripped, since a security mirror cannot serve trixie or
# sid), or deb.debian.org. Used wherever pgvigil's scripts fetch from another suite
# (scripts/pg-chroots.sh, bench/fetch-exporters.sh).
set -euo pipefail
m=""
if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
  m=$(awk 'tolower($1)=="uris:" {print $2; exit}' /etc/apt/sources.list.d/*.sources)
fi
if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
  m=$(awk '$1=="deb" && $2 !~ /^\[/ {print $2; exit} $1=="deb" && $2 ~ /^\[/ {print $3; exit}' /etc/apt/sources.list)
fi
m="${m%-security}"
echo "${m:-http://deb.debian.org/debian}"
