"""Answers each case's hand-written SQL with DuckDB over the calls fixture.

stdin: {"file": path, "table": "calls" | "conns", "cases": [where-clause, ...]}; stdout: one JSON list per case, the sorted
row ids, or {"error": message}.
"""
import json
import sys

import duckdb

req = json.load(sys.stdin)
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
# DuckDB compares TIMESTAMPTZ_NS with nothing else: read it at microseconds (the cases' bounds
# are milliseconds).
if req["table"] == "calls":
    con.execute(
        "CREATE VIEW calls AS SELECT * REPLACE (CAST(\"timestamp\" AS TIMESTAMPTZ) AS \"timestamp\") "
        f"FROM read_parquet('{req['file']}')"
    )
    key = "id"
else:
    con.execute(
        "CREATE VIEW conns AS SELECT * REPLACE (CAST(first_ts AS TIMESTAMPTZ) AS first_ts, "
        f"CAST(last_ts AS TIMESTAMPTZ) AS last_ts) FROM read_parquet('{req['file']}')"
    )
    key = "CAST(conn_id AS VARCHAR)"
out = []
for where in req["cases"]:
    try:
        rows = con.execute(f"SELECT {key} FROM {req['table']} WHERE {where}").fetchall()
        out.append([r[0] for r in rows])
    except Exception as e:  # noqa: BLE001 - reported per case by the Rust test
        out.append({"error": str(e)})
json.dump(out, sys.stdout)
