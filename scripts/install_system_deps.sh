#!/usr/bin/env bash
# Install the system packages mcts-agent needs (Debian/Ubuntu). Idempotent: safe to rerun.
# Add a package by appending it to PACKAGES; keep one name per line.
set -euo pipefail

PACKAGES=(
  bubblewrap   # envs/code sandbox: user/net/pid/mount namespaces, read-only host filesystem
  chromium     # headless browser: tests/test_viewer_browser.py (offline tree viewer), envs/web (MiniWoB++)
  chromium-driver  # /usr/bin/chromedriver for Selenium (envs/web): never a downloaded driver
  default-jre-headless  # a JVM for ScienceWorld's jar (text worlds)
  fonts-dejavu-core  # a font for chromium's screenshots of the viewer
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system deps already installed: ${PACKAGES[*]}"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "installed: ${missing[*]}"
