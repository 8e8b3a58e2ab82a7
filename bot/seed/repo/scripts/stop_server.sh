#!/bin/bash
# ApplicationStop (CodeDeploy runs the previous revision's copy of this script).
set -e
root="${PIPEBOT_INSTANCE_ROOT:-}"
rm -f "$root/var/run/seed-site.status"
echo "stopped the site ($DEPLOYMENT_GROUP_NAME)"
