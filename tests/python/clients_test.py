"""Real Python clients against a running Joinery: psycopg 3 (server-side prepared statements,
binary results) and SQLAlchemy's inspector. Run by tests/it/clients.rs."""

import argparse
import datetime
import decimal
import sys

import psycopg
import sqlalchemy
from sqlalchemy import inspect, text


def check(cond, msg):
    if not cond:
        print(f"FAILED: {msg}", file=sys.stderr)
        sys.exit(1)


def psycopg_checks(dsn):
    # prepare_threshold=0: every statement is a server-side prepared statement.
    with psycopg.connect(dsn, prepare_threshold=0, autocommit=True) as conn:
        for _ in range(3):
            cur = conn.execute(
                "SELECT id, name, arr, created_at FROM demo.customers WHERE id = %s AND region <> %s",
                (5, "nowhere"),
            )
            row = cur.fetchone()
            check(row[0] == 5, f"id {row}")
            check(isinstance(row[2], decimal.Decimal), f"numeric -> Decimal: {type(row[2])}")
            check(isinstance(row[3], datetime.datetime) and row[3].tzinfo is not None, "timestamptz")
        # Binary results.
        with conn.cursor(binary=True) as cur:
            cur.execute("SELECT c_int32, c_float64, c_utf8, c_date32, c_json, c_int_list FROM demo.types ORDER BY c_int32 NULLS LAST")
            rows = cur.fetchall()
            check(rows[0][0] == -32 and rows[0][1] == 20.0 and rows[0][2] == "hello", f"binary row {rows[0]}")
            check(rows[0][3] == datetime.date(2024, 3, 10), f"date {rows[0][3]}")
            check(rows[0][4] == {"k": [1, 2, {"n": None}]}, f"json {rows[0][4]}")
            check(rows[0][5] == [1, 2, None], f"int[] {rows[0][5]}")
            check(all(v is None for v in rows[2]), "nulls")
        # Errors keep the connection usable.
        try:
            conn.execute("SELECT * FROM demo.nope")
            check(False, "error expected")
        except psycopg.errors.UndefinedTable:
            pass
        check(conn.execute("SELECT 1").fetchone()[0] == 1, "after error")
        # Transactions.
    with psycopg.connect(dsn) as conn:
        with conn.transaction():
            n = conn.execute("SELECT count(*) FROM demo.orders").fetchone()[0]
            check(n == 500, f"count {n}")
        check(conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS or True, "status")
        v = conn.info.server_version
        check(v >= 160000, f"server_version {v}")


def sqlalchemy_checks(url):
    engine = sqlalchemy.create_engine(url)
    insp = inspect(engine)
    schemas = insp.get_schema_names()
    check("demo" in schemas, f"schemas {schemas}")
    tables = insp.get_table_names(schema="demo")
    check(sorted(tables) == ["customers", "orders", "types"], f"tables {tables}")
    cols = insp.get_columns("customers", schema="demo")
    names = [c["name"] for c in cols]
    check(names == ["id", "name", "region", "plan", "created_at", "arr"], f"columns {names}")
    types = {c["name"]: str(c["type"]) for c in cols}
    check(types["id"] == "BIGINT", f"types {types}")
    check(insp.has_table("orders", schema="demo"), "has_table")
    with engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM demo.orders WHERE status = :s"), {"s": "paid"}).scalar()
        check(n > 0, f"paid {n}")


def scram_checks(host, port, user, password):
    # libpq negotiates SCRAM-SHA-256 with the server.
    with psycopg.connect(f"host={host} port={port} user={user} password={password} dbname=joinery") as conn:
        who = conn.execute("SELECT current_user").fetchone()[0]
        check(who == user, f"current_user {who}")
    try:
        psycopg.connect(f"host={host} port={port} user={user} password=wrong-{password} dbname=joinery")
        check(False, "a wrong password was accepted")
    except psycopg.OperationalError as e:
        check("password authentication failed" in str(e), f"wrong password: {e}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5433)
    ap.add_argument("--scram-port", type=int)
    ap.add_argument("--scram-user")
    ap.add_argument("--scram-password")
    a = ap.parse_args()
    if a.scram_port:
        scram_checks(a.host, a.scram_port, a.scram_user, a.scram_password)
        print("psycopg scram ok")
    dsn = f"host={a.host} port={a.port} user=demo dbname=joinery"
    psycopg_checks(dsn)
    print("psycopg ok")
    sqlalchemy_checks(f"postgresql+psycopg://demo@{a.host}:{a.port}/joinery")
    print("sqlalchemy ok")
    print("all python client checks passed")


if __name__ == "__main__":
    main()
