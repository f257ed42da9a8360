#!/bin/sh
# What the official nginx image's entrypoint does for docker-compose.yml, with Debian's
# nginx-light (deploy/compose/offline.yml): render every /etc/nginx/templates/*.template into
# NGINX_ENVSUBST_OUTPUT_DIR, replacing only the variables whose names match
# NGINX_ENVSUBST_FILTER (nginx's own $variables stay), then nginx in the foreground.
set -eu
out=${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}
names=$(env | cut -d= -f1 | grep -E "${NGINX_ENVSUBST_FILTER:-.}" | sed 's/.*/${&}/' | tr '\n' ' ')
for template in /etc/nginx/templates/*.template; do
  [ -e "$template" ] || continue
  name=$(basename "$template" .template)
  envsubst "$names" < "$template" > "$out/$name"
done
exec nginx -g 'daemon off;'
