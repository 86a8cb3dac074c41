#!/bin/sh
# nginx in the foreground under honcho (`make run`):
#   deploy/nginx/run.sh DIR LISTEN API_1 API_2 FLOWER [--set NAME=VALUE ...]
# renders deploy/nginx/ into DIR (nginx's prefix: pid and temporary files stay there) with
# the options after the five passed to `auditlog nginx-config`, checks it, and runs nginx
# until SIGTERM or SIGINT.
#
# honcho stops a process by sending SIGTERM to its process group, and SIGTERM is nginx's
# *fast* shutdown: open requests are cut. So nginx runs in a session of its own, and this
# script turns SIGTERM/SIGINT into SIGQUIT, the graceful shutdown (open requests finish,
# within worker_shutdown_timeout, less than honcho's 5 s).
set -eu
dir=$1 listen=$2 api_1=$3 api_2=$4 flower=$5
shift 5
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
# The access log is a file in DIR, not this process's output: relaying a line per request
# through honcho cost a tenth of a core at 2,000 requests/s (docs/DESIGN.md, "Serving").
auditlog nginx-config --out "$dir" --listen "$listen" --api "$api_1" --api "$api_2" \
  --flower "$flower" --access-log "$dir/access.log" \
  "$@" >/dev/null
nginx=$(command -v nginx || echo /usr/sbin/nginx)
conf="$(cd "$dir" && pwd)/nginx.conf"
"$nginx" -t -q -p "$(dirname "$conf")/" -c "$conf" -e stderr
setsid "$nginx" -p "$(dirname "$conf")/" -c "$conf" -e stderr &
pid=$!
stopping=0
trap 'stopping=1; kill -QUIT "$pid" 2>/dev/null || true' TERM INT
echo "nginx: listening on http://$listen (Flower at /flower/)"
status=0
wait "$pid" || status=$?
if [ "$stopping" = 1 ]; then
  # The trapped signal ended that wait early; this one waits for nginx and gets its status.
  status=0
  wait "$pid" || status=$?
fi
exit "$status"
