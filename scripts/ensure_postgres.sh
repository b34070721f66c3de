#!/bin/sh
# The cluster tests (tests/test_cluster.py) start a real PostgreSQL server on 127.0.0.1 in a
# temporary folder. Install Debian's server package where it is missing; where that cannot be
# done, say so in one line: those tests then skip with the reason.
if command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing PostgreSQL for the cluster tests (Debian's postgresql package)"
    (apt-get install -y -q postgresql >/dev/null 2>&1 ||
        (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q postgresql >/dev/null 2>&1)) &&
        exit 0
fi
echo "PostgreSQL could not be installed here: the cluster tests will skip"
exit 0
