#!/usr/bin/env bash
# Start the local PostgreSQL and MariaDB servers when they are down (the machines of this project have both).
set -uo pipefail
if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
    if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    fi
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null; then
    if [ -x /usr/sbin/mariadbd ]; then
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
    fi
fi
for _ in $(seq 1 30); do
    (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null && exit 0
    sleep 1
done
echo "warning: PostgreSQL or MariaDB is not answering on 127.0.0.1" >&2
