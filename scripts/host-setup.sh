#!/usr/bin/env bash
# Prepare a Debian host for dlbox: the packages it drives, and a running Docker Engine.
#   scripts/host-setup.sh packages   install what is missing (python3-venv, debootstrap, docker.io, postgresql, chromium, docker-registry, skopeo, ...)
#   scripts/host-setup.sh engine     start dockerd if no engine answers, and wait for it; before it starts
#                                    one, /etc/docker/daemon.json gets log rotation and live-restore
#                                    (scripts/daemon_json.py: merged, an admin's own settings kept)
#   scripts/host-setup.sh daemon-config [PATH]   only that merge (a running dockerd reads it at its next start)
# Idempotent: does nothing that is already done. Needs root for installs and for dockerd.
set -euo pipefail

log() { printf '> %s\n' "$*" >&2; }

need_packages() {
  local missing=()
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v docker >/dev/null || missing+=(docker.io)
  command -v ssh >/dev/null || missing+=(openssh-client)
  command -v git >/dev/null || missing+=(git)
  command -v chromium >/dev/null || missing+=(chromium)  # the dashboard's browser tests
  command -v python3 >/dev/null || missing+=(python3)
  python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
  # the store tests start a throwaway PostgreSQL server (initdb, pg_ctl; Debian keeps them off PATH)
  compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || missing+=(postgresql)
  # benchmark 9 loads the team server from a separate process
  command -v wrk >/dev/null || missing+=(wrk)
  # issue 15's registry tests and benchmark 15: a real OCI registry (CNCF Distribution) with bcrypt
  # htpasswd auth and TLS from a CA of the test's; skopeo reads the signature manifests independently
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  command -v htpasswd >/dev/null || missing+=(apache2-utils)
  command -v skopeo >/dev/null || missing+=(skopeo)
  command -v openssl >/dev/null || missing+=(openssl)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "error: missing ${missing[*]}; install them as root (apt-get install ${missing[*]})" >&2
      exit 1
    fi
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
  fi
}

# Container logs rotate (json-file, 50m x 5) and containers outlive a dockerd restart (live-restore).
configure_daemon() { python3 "$(dirname "$0")/daemon_json.py" "$1"; }

engine_answers() { timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start_engine() {
  if engine_answers; then
    log "Docker Engine answers at ${DOCKER_HOST:-unix:///var/run/docker.sock}"
    return
  fi
  if [ -n "${DOCKER_HOST:-}" ]; then
    echo "error: DOCKER_HOST=$DOCKER_HOST does not answer; start that engine or unset DOCKER_HOST" >&2
    exit 1
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "error: no Docker Engine answers and starting one needs root (dockerd)" >&2
    exit 1
  fi
  configure_daemon /etc/docker/daemon.json
  log "starting dockerd (log: /var/log/dlbox-dockerd.log)"
  setsid nohup dockerd >/var/log/dlbox-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 120); do
    engine_answers && { log "Docker Engine is up"; return; }
    sleep 0.5
  done
  echo "error: dockerd did not answer within 60 s; see /var/log/dlbox-dockerd.log" >&2
  tail -5 /var/log/dlbox-dockerd.log >&2 || true
  exit 1
}

case "${1:-}" in
  packages) need_packages ;;
  engine) need_packages; start_engine ;;
  daemon-config) configure_daemon "${2:-/etc/docker/daemon.json}" ;;
  *) echo "usage: $0 packages|engine|daemon-config [PATH]" >&2; exit 2 ;;
esac
