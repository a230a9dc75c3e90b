#!/usr/bin/env bash
# Install or upgrade edge-agent as a systemd service, from this checkout.
# For Raspberry Pi OS Bookworm / Debian 12; run as root:
#
#   sudo scripts/install.sh [--no-start]
#   sudo env EDGE_AGENT_RUNTIME=tflite scripts/install.sh   # tflite-runtime, not LiteRT
#
# Installs into /opt/edge-agent (a virtualenv), /etc/edge-agent/config.toml (from
# config.example.toml, only if there is none) and /etc/systemd/system/edge-agent.service,
# creates the system user edge-agent, enables the service and restarts it (not on a
# first install, whose config needs editing first).
# Running it again upgrades in place; the configuration is never overwritten.
set -euo pipefail

PREFIX=/opt/edge-agent
CONFIG_DIR=/etc/edge-agent
CONFIG=$CONFIG_DIR/config.toml
STATE_DIR=/var/lib/edge-agent
UNIT=/etc/systemd/system/edge-agent.service
ACCOUNT=edge-agent
RUNTIME=${EDGE_AGENT_RUNTIME:-litert}
# The agent would read EDGE_AGENT_RUNTIME as its `runtime` setting: keep it from it.
unset EDGE_AGENT_RUNTIME
PYTHON=/usr/bin/python3   # Debian's: the service user must be able to run it (not pyenv's)
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

start=yes
for arg in "$@"; do
    case $arg in
        --no-start) start=no ;;
        -h | --help) sed -n '2,12s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) die "unknown argument: $arg (usage: install.sh [--no-start])" ;;
    esac
done

[ "$(id -u)" -eq 0 ] || die "run as root: sudo $0 $*"
if [ ! -f "$SRC/pyproject.toml" ] || [ ! -f "$SRC/systemd/edge-agent.service" ]; then
    die "$SRC is not an edge-agent checkout"
fi
case $RUNTIME in
    litert | tflite) ;;
    *) die "EDGE_AGENT_RUNTIME must be litert or tflite, not '$RUNTIME'" ;;
esac

if ! dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q 'ok installed'; then
    say "installing python3-venv"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
[ -x "$PYTHON" ] || die "$PYTHON is missing (apt-get install python3)"

if ! id -u "$ACCOUNT" >/dev/null 2>&1; then
    say "creating system user $ACCOUNT"
    useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
        --shell /usr/sbin/nologin --comment "edge-agent daemon" "$ACCOUNT"
fi

# A new virtualenv the first time, and again if Debian's Python changed under it or
# the runtime changes (the two need different numpy versions).
probe='import sys; print(sys.base_prefix, *sys.version_info[:2])'
if [ "$("$PREFIX/bin/python" -c "$probe" 2>/dev/null || true)" != "$("$PYTHON" -c "$probe")" ] ||
    [ "$(cat "$PREFIX/runtime" 2>/dev/null || true)" != "$RUNTIME" ]; then
    say "creating the virtualenv $PREFIX"
    "$PYTHON" -m venv --clear "$PREFIX"
fi
say "installing edge-agent[$RUNTIME] into $PREFIX"
"$PREFIX/bin/python" -m pip install --quiet --upgrade pip
# Built from a copy: an in-tree build leaves build/ in the checkout, owned by root,
# and setuptools would package modules since deleted from it.
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
cp -r "$SRC/pyproject.toml" "$SRC/README.md" "$SRC/edge_agent" "$build/"
"$PREFIX/bin/python" -m pip install --quiet --upgrade "${build}[${RUNTIME}]"
echo "$RUNTIME" >"$PREFIX/runtime"
# The bundled models, which config.example.toml names.
install -d -m 0755 "$PREFIX/models" "$PREFIX/share/edge-agent"
install -m 0644 "$SRC"/models/*.tflite "$SRC"/models/*_labels.txt "$PREFIX/models/"
install -m 0644 "$SRC/systemd/camera-serial.conf.example" "$PREFIX/share/edge-agent/"

# The config may hold MQTT credentials: readable by the service's group only.
install -d -m 0750 -o root -g "$ACCOUNT" "$CONFIG_DIR"
install -d -m 0750 -o "$ACCOUNT" -g "$ACCOUNT" "$STATE_DIR"
new_config=no
if [ ! -e "$CONFIG" ]; then
    say "writing $CONFIG from config.example.toml"
    install -m 0640 -o root -g "$ACCOUNT" "$SRC/config.example.toml" "$CONFIG"
    new_config=yes
fi
say "checking $CONFIG"
# as the service will read it: its user, no EDGE_AGENT_* overrides from this shell
(cd / && runuser -u "$ACCOUNT" -- env -i PATH=/usr/bin:/bin \
    "$PREFIX/bin/edge-agent" config check "$CONFIG" >/dev/null) ||
    die "$CONFIG is not valid (above); fix it and run this again"

say "installing $UNIT"
install -m 0644 "$SRC/systemd/edge-agent.service" "$UNIT"

if [ ! -d /run/systemd/system ]; then
    # A container or an image build: enabling still works (it only makes symlinks).
    systemctl enable --quiet edge-agent.service 2>/dev/null || true
    say "systemd is not running here: edge-agent is enabled, not started"
else
    systemctl daemon-reload
    systemctl enable --quiet edge-agent.service
    if [ "$start" = no ]; then
        say "enabled, not started (--no-start): systemctl start edge-agent"
    elif [ "$new_config" = yes ]; then
        say "enabled; edit $CONFIG (broker, cameras, sensors), then: systemctl start edge-agent"
    else
        # restart, not start: an upgrade must replace the running process
        systemctl restart edge-agent.service ||
            die "edge-agent did not start: journalctl -u edge-agent -n 50"
        say "edge-agent is running: systemctl status edge-agent, journalctl -u edge-agent -f"
    fi
fi
say "cameras, serial ports: see $PREFIX/share/edge-agent/camera-serial.conf.example"
