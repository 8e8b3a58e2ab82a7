#!/bin/bash
# ApplicationStart: record that the site serves this deployment.
set -e
root="${PIPEBOT_INSTANCE_ROOT:-}"
mkdir -p "$root/var/run"
echo "$DEPLOYMENT_ID" > "$root/var/run/seed-site.status"
# pipebot's demo: the build leaves its pause here so the deployment can be watched running.
pause="$(dirname "$0")/demo-pause"
if [ -f "$pause" ]; then sleep "$(cat "$pause")"; fi
echo "serving deployment $DEPLOYMENT_ID"
