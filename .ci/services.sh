# Services the tests need, sourced by .ci/run (root, Debian 12, `set -euo pipefail`, before the venv exists).
#
# A local PostgreSQL server for the sweep's shared-ledger test (tests/test_sweep.py::test_postgres_ledger):
# installed from the Debian packages if missing, started, given a role and a database, and announced to the
# tests as EMBBERT_TEST_POSTGRES_URL. Idempotent (a second run only checks that the server is up) and
# best-effort: if the server cannot be had, it says so on stderr and the test is skipped with that reason
# instead of CI failing on an apt mirror hiccup. Set EMBBERT_REQUIRE_POSTGRES=1 to make that fatal.

_embbert_postgres() {
  local user=embbert password=embbert db=embbert_test port=5432 ver
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    # Only the package lists and the server; -qq keeps CI's log to the lines that matter.
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends postgresql >/dev/null || return 1
  fi
  ver=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
  [ -n "$ver" ] || return 1
  if ! pg_lsclusters -h | awk '{print $1, $2}' | grep -qx "$ver main"; then
    pg_createcluster --port "$port" "$ver" main >/dev/null || return 1
  fi
  if ! pg_lsclusters -h | awk -v v="$ver" '$1 == v && $2 == "main" {print $4}' | grep -q online; then
    pg_ctlcluster "$ver" main start || return 1
  fi
  port=$(pg_lsclusters -h | awk -v v="$ver" '$1 == v && $2 == "main" {print $3}')
  local i
  for i in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p "$port" && break
    sleep 1
  done
  pg_isready -q -h 127.0.0.1 -p "$port" || return 1
  # psql as the postgres superuser over the local socket (peer authentication); cd / so that su does not
  # complain about an unreadable working directory.
  local psql="cd / && psql -v ON_ERROR_STOP=1 -qtA -p $port"
  if ! su postgres -c "$psql -c \"SELECT 1 FROM pg_roles WHERE rolname = '$user'\"" | grep -q 1; then
    su postgres -c "$psql -c \"CREATE ROLE $user LOGIN PASSWORD '$password'\"" >/dev/null || return 1
  fi
  if ! su postgres -c "$psql -c \"SELECT 1 FROM pg_database WHERE datname = '$db'\"" | grep -q 1; then
    su postgres -c "$psql -c \"CREATE DATABASE $db OWNER $user\"" >/dev/null || return 1
  fi
  export EMBBERT_TEST_POSTGRES_URL="postgresql+psycopg2://$user:$password@127.0.0.1:$port/$db"
  echo "services.sh: PostgreSQL $ver on 127.0.0.1:$port, database $db (EMBBERT_TEST_POSTGRES_URL)" >&2
}

if ! _embbert_postgres; then
  echo "services.sh: WARNING: no local PostgreSQL server; the PostgreSQL ledger test will be skipped" >&2
  if [ "${EMBBERT_REQUIRE_POSTGRES:-0}" = 1 ]; then
    false
  fi
fi
unset -f _embbert_postgres
