# Sourced by bench/scaleout and bench/soak: starts the local PostgreSQL cluster when nothing answers
# on 127.0.0.1:5432 (as bench/run does), and says so when there is none to start.
ensure_postgres() {
  if command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432; then
    return 0
  fi
  if [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "$(basename "$0"): starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && return 0; sleep 1; done
  fi
  echo "$(basename "$0"): no PostgreSQL answers on 127.0.0.1:5432 (--pg-url points elsewhere)" >&2
}
