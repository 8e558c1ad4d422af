#!/bin/bash
# First start of an empty data folder only (the image's /docker-entrypoint-initdb.d):
# one database and one owner per consumer, passwords from the `postgresql` Secret.
set -euo pipefail
for db in mlflow dagster jobs; do
  var="${db^^}_DB_PASSWORD"
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v db="$db" -v pw="${!var}" <<'SQL'
CREATE ROLE :"db" LOGIN PASSWORD :'pw';
CREATE DATABASE :"db" OWNER :"db";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL
done
