#!/bin/sh
# The proxy image's entry point (deploy/Dockerfile.proxy): a first nginx
# configuration from the registry, nginx, then `cdctl template` keeping the
# configuration in step and reporting each applied revision to the registry.
set -eu
prefix=${NGINX_PREFIX:-/var/lib/switchyard-nginx}
listen=${PROXY_LISTEN:-80}
template=${SWITCHYARD_TEMPLATE:-/etc/switchyard/nginx.conf.j2}
export NGINX_PREFIX=$prefix PROXY_LISTEN=$listen
export SWITCHYARD_PROXY_ID="${SWITCHYARD_PROXY_ID:-proxy-$(hostname)}"
mkdir -p "$prefix"

# The registry may start after the proxy: wait for a first configuration.
until cdctl template --once --allow-empty --template "$template" --out "$prefix/nginx.conf"; do
  echo "waiting for the registry at ${SWITCHYARD_REGISTRY:-?}" >&2
  sleep 1
done
nginx -p "$prefix" -c "$prefix/nginx.conf"

exec cdctl template --template "$template" --out "$prefix/nginx.conf" \
  --check "nginx -t -q -p $prefix -c {path}" \
  --reload "/bin/sh /etc/switchyard/reload.sh $prefix 127.0.0.1:${listen##*:}"
