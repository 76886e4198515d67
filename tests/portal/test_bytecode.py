"""A web worker starts from bytecode: nothing of Django, the libraries or the project is compiled.

These machines (and the Dockerfile) set PYTHONDONTWRITEBYTECODE, so a module Python had to
compile is compiled again in every process, at every start: a restarted web process took 9 s
before it answered instead of 3.5. `make install` writes the libraries' bytecode and
`portal.devstack` the project's.
"""

from __future__ import annotations

import os
import subprocess

from portal import launcher

PROBE = """
import importlib._bootstrap_external as ext, json, os
compiled = []
original = ext.SourceLoader.source_to_code
def source_to_code(self, data, path, *a, **k):
    compiled.append(path)
    return original(self, data, path, *a, **k)
ext.SourceLoader.source_to_code = source_to_code
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
import portal.asgi  # what a web worker imports: Django set up, every app, the gateway
print(json.dumps(compiled))
"""


def test_a_web_worker_imports_everything_from_bytecode() -> None:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(
        [launcher.PYTHON, "-c", PROBE], cwd=launcher.BASE_DIR, env=env,
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    compiled = out.stdout.strip().splitlines()[-1]
    assert compiled == "[]", f"compiled at start: {compiled[:2000]}"
