#!/bin/bash
# Run by the mysql image's entrypoint on the first start only (empty data volume): creates
# `grafana_reader`, a SELECT-only user on the marts database, with GRAFANA_MYSQL_PASSWORD.
# Works both sourced (the entrypoint's default for non-executable files) and executed; it
# sets no shell options, since a sourced file would change the entrypoint's own.

if [ -z "${GRAFANA_MYSQL_PASSWORD:-}" ]; then
    echo "10-grafana-reader.sh: GRAFANA_MYSQL_PASSWORD is empty, no grafana_reader user" >&2
else
    # Escape for a single-quoted SQL string literal.
    _pw=${GRAFANA_MYSQL_PASSWORD//\\/\\\\}
    _pw=${_pw//\'/\'\'}
    MYSQL_PWD="${MYSQL_ROOT_PASSWORD}" mysql --protocol=socket --user=root <<SQL
CREATE USER IF NOT EXISTS 'grafana_reader'@'%' IDENTIFIED BY '${_pw}';
GRANT SELECT ON \`${MYSQL_DATABASE:-salesflow}\`.* TO 'grafana_reader'@'%';
SQL
    unset _pw
    echo "10-grafana-reader.sh: created grafana_reader (SELECT on ${MYSQL_DATABASE:-salesflow})"
fi
