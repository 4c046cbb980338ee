#!/bin/sh
# Prestart: wait for the database, apply migrations, then run the given command (default: the service).
set -eu

python - <<'PY'
import os, sys, time
from sqlalchemy import create_engine, text
from fascl.settings import get_settings

url = get_settings().sqlalchemy_url
deadline = time.monotonic() + float(os.environ.get("FASCL_DB_WAIT_SECONDS", "60"))
while True:
    try:
        with create_engine(url).connect() as conn:
            conn.execute(text("select 1"))
        break
    except Exception as exc:
        if time.monotonic() > deadline:
            sys.exit(f"database not reachable at {url}: {exc}")
        time.sleep(1)
PY

fascl db upgrade
exec "$@"
