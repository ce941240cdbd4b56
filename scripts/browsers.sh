#!/usr/bin/env bash
# Headless Chromium and its driver for the console's browser tests (tests/browser, marker `browser`).
#
# Debian's `chromium` and `chromium-driver` packages: the driver always matches the browser, and nothing is
# downloaded at test time (the tests run selenium with SE_OFFLINE=true). Installs them only when missing;
# needs root (or sudo) for apt-get.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver
