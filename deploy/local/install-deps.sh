#!/usr/bin/env bash
# Installs the Debian packages the local stack and the tests need, only those missing.
# Usage: deploy/local/install-deps.sh
set -euo pipefail

# chromium: the browser tests of the kiosk and dashboards (make test) drive it headless with Playwright.
# poppler-utils: pdftotext/pdftoppm check the text and pages of the device history record PDF in tests.
# prometheus: promtool checks deploy/prometheus/, and the alert rules are exercised against it in a test.
packages=(mosquitto influxdb victoria-metrics postgresql chromium poppler-utils prometheus)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
  echo "amtrace: these Debian packages are missing: ${missing[*]}" >&2
  echo "amtrace: run as root, or install them first: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "amtrace: installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d stops the packages' own services from starting: the project runs its own
# instances on free loopback ports, with data under var/.
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}"
