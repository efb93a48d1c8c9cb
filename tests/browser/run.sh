#!/usr/bin/env bash
# The real-browser test: headless Chromium runs MQTT.js over ws:// against Starling.
# Installs what it needs (Debian's chromium, MQTT.js from the npm registry), then runs the
# ignored test tests/browser.rs. Called by .ci/run.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if ! command -v chromium >/dev/null 2>&1; then
    echo "browser test: installing chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
fi
if [ ! -f "$here/node_modules/mqtt/dist/mqtt.min.js" ]; then
    echo "browser test: installing MQTT.js"
    (cd "$here" && npm ci --no-audit --no-fund --omit-lockfile-registry-resolved >/dev/null)
fi

cd "$root"
STARLING_CHROMIUM="$(command -v chromium)" \
STARLING_MQTTJS="$here/node_modules/mqtt/dist/mqtt.min.js" \
    cargo test --test browser -- --ignored
