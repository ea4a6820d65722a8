#!/bin/sh
# Install the browser that tests/test_browser.py drives (Debian's Chromium). Idempotent: does nothing
# when /usr/bin/chromium exists. Playwright's own browser download (`playwright install`) is not used:
# it needs the internet; the Python package in requirements.txt drives this system Chromium.
set -eu

if [ -x /usr/bin/chromium ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    echo "install_browser.sh: installing chromium with apt-get (about 30 s)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    echo "install_browser.sh: $(/usr/bin/chromium --version 2>/dev/null || echo 'chromium installed')"
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    echo "install_browser.sh: installing chromium with sudo apt-get (about 30 s)"
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
    echo "install_browser.sh: /usr/bin/chromium is missing and this user cannot install packages." >&2
    echo "  Install it as root:  apt-get update && apt-get install -y chromium" >&2
    echo "  (or point RCL_CHROMIUM at another Chromium). Until then the browser test is skipped," >&2
    echo "  except under CI=true, where it fails." >&2
fi
