#!/bin/bash
# ValidateService: the home page is in place and names its release.
set -e
root="${PIPEBOT_INSTANCE_ROOT:-}"
grep -q "<footer>release-" "$root/var/www/html/index.html"
echo "index.html is live"
