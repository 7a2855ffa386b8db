"""The schema check a worker makes without Alembic agrees with Alembic."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

from worker.storage.migrate import SCHEMA_HEAD, head


def test_the_schema_head_constant_is_the_newest_migration():
    assert head() == SCHEMA_HEAD


def test_a_worker_process_loads_neither_alembic_nor_the_ed25519_code_until_it_needs_them():
    code = (
        "import sys; import worker.actors; "
        "print(sorted(m for m in ('alembic', 'cryptography.hazmat.primitives.asymmetric.ed25519') if m in sys.modules))"
    )
    env = {"PATH": "/usr/bin:/bin", "METRICS_PORT": "0", "CALLBACK_SIGNING_SECRET": "whsec_" + "A" * 32}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
