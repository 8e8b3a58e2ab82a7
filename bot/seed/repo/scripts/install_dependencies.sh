#!/bin/bash
# BeforeInstall: make sure the web root exists.
set -e
root="${PIPEBOT_INSTANCE_ROOT:-}"
mkdir -p "$root/var/www/html" "$root/var/run"
echo "prepared $root/var/www/html for $APPLICATION_NAME"
