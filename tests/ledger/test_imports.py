"""The store is imported on a step's first write, never by a DAG file or ``import mlcost``."""

import subprocess
import sys


def test_cheap_imports_do_not_load_sqlalchemy():
    code = (
        "import sys, mlcost, mlcost.operators, mlcost.metering, mlcost.ledger, mlcost.sinks.ledger\n"
        "mlcost.ledger.Ledger('postgresql://u@h/db')  # resolving a URL needs no engine\n"
        "print(sorted(m for m in ('sqlalchemy', 'alembic', 'psycopg') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
