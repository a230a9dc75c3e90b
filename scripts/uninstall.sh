#!/usr/bin/env bash
# Remove what scripts/install.sh installed; run as root:
#
#   sudo scripts/uninstall.sh            # stop, disable, remove the unit and /opt/edge-agent
#   sudo scripts/uninstall.sh --purge    # also /etc/edge-agent, /var/lib/edge-agent (the
#                                        # outbox of undelivered events), the unit's drop-ins
#                                        # and the edge-agent user
set -euo pipefail

PREFIX=/opt/edge-agent
CONFIG_DIR=/etc/edge-agent
STATE_DIR=/var/lib/edge-agent
UNIT=/etc/systemd/system/edge-agent.service
ACCOUNT=edge-agent

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'uninstall.sh: error: %s\n' "$*" >&2; exit 1; }

purge=no
for arg in "$@"; do
    case $arg in
        --purge) purge=yes ;;
        -h | --help) sed -n '2,8s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) die "unknown argument: $arg (usage: uninstall.sh [--purge])" ;;
    esac
done
[ "$(id -u)" -eq 0 ] || die "run as root: sudo $0 $*"

if [ -d /run/systemd/system ]; then
    say "stopping and disabling edge-agent"
    systemctl disable --now --quiet edge-agent.service 2>/dev/null || true
else
    systemctl disable --quiet edge-agent.service 2>/dev/null || true
fi
say "removing $UNIT and $PREFIX"
rm -f "$UNIT"
rm -rf "$PREFIX"
if [ "$purge" = yes ]; then
    say "purging $CONFIG_DIR, $STATE_DIR, $UNIT.d and the user $ACCOUNT"
    rm -rf "$CONFIG_DIR" "$STATE_DIR" "$UNIT.d"
    if id -u "$ACCOUNT" >/dev/null 2>&1; then
        userdel "$ACCOUNT"
    fi
else
    say "kept $CONFIG_DIR and $STATE_DIR (events not yet delivered are in its outbox.db): --purge removes them"
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl reset-failed edge-agent.service 2>/dev/null || true
fi
say "edge-agent is uninstalled"
