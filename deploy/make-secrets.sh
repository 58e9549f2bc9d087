#!/bin/sh
# Makes the tokens deploy/stack.yml (and the compose files) hand out as
# Docker secrets: admin.token, agent.token and proxy.token in DIR (default
# deploy/secrets), readable by their owner only. Existing files are kept,
# so running it again changes nothing. Each token is syt_, 8 random bytes
# of accessor and 32 of secret, in hex: the format `cdctl token create`
# prints, which the registry accepts on its first start.
set -eu
dir=${1:-$(dirname "$0")/secrets}
mkdir -p "$dir"
umask 077
hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
for name in admin agent proxy; do
  file="$dir/$name.token"
  [ -s "$file" ] || printf 'syt_%s_%s\n' "$(hex 8)" "$(hex 32)" > "$file"
done
echo "tokens in $dir: admin.token agent.token proxy.token" >&2
