#!/usr/bin/env bash
# Start a Docker engine for the runner pool (and its tests), installing docker.io first if needed.
#
#   infra/docker/start-dockerd.sh        # idempotent: returns at once when an engine already answers
#
# Runs as root. dockerd starts in the background with --bridge=none --iptables=false, so it never rewrites the
# host's iptables or adds a bridge (the runner containers use --network none anyway). It waits until the engine
# answers `docker info`, up to STEPCODER_DOCKERD_WAIT_S seconds (default 60). Log: STEPCODER_DOCKERD_LOG
# (default /var/log/stepcoder-dockerd.log). Exit status 0 = an engine is ready; non-zero = none could start (the
# Docker tests then skip, loudly).
set -euo pipefail

WAIT_S="${STEPCODER_DOCKERD_WAIT_S:-60}"
LOG="${STEPCODER_DOCKERD_LOG:-/var/log/stepcoder-dockerd.log}"

say() { echo "start-dockerd: $*" >&2; }

engine_ready() { command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1; }

if engine_ready; then
    say "a Docker engine is already running"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    say "not root: cannot install or start dockerd"
    exit 1
fi
if ! command -v dockerd >/dev/null 2>&1; then
    say "installing docker.io (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || say "apt-get update failed; trying the install anyway"
    apt-get install -y -qq --no-install-recommends docker.io >/dev/null
fi
if ! pgrep -x dockerd >/dev/null 2>&1; then
    say "starting dockerd (log: $LOG)"
    # setsid + nohup: the engine outlives this script and the shell that called it.
    setsid nohup dockerd --bridge=none --iptables=false --ip6tables=false >>"$LOG" 2>&1 </dev/null &
fi
for _ in $(seq "$WAIT_S"); do
    if engine_ready; then
        say "Docker engine ready ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
        exit 0
    fi
    sleep 1
done
say "dockerd did not become ready within ${WAIT_S}s; last log lines:"
tail -n 20 "$LOG" >&2 || true
exit 1
