"""A subprocess prelude that makes `import torch` and `import timm` fail, to prove a code
path never needs them (scipy and pandas only look them up in sys.modules)."""

PRELUDE = (
    "import sys\n"
    "class _Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('torch', 'timm', 'torchvision'):\n"
    "            raise ImportError(f'{name} is blocked in this test')\n"
    "sys.meta_path.insert(0, _Block())\n"
)

# Many commands in one torch-free process: each argv list runs through the CLI in turn, with its
# own stdout and stderr, and its exit status; printed as JSON. One Python start-up and one import
# of the CLI instead of one per command (each costs about a second on a 2-core machine).
MANY = PRELUDE + (
    "import contextlib, io, json\n"
    "from halo_bench.cli import main\n"
    "results = []\n"
    "for argv in json.loads(sys.argv[1]):\n"
    "    out, err, code = io.StringIO(), io.StringIO(), 0\n"
    "    sys.argv = ['halo-bench', *argv]\n"
    "    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):\n"
    "        try:\n"
    "            main()\n"
    "        except SystemExit as exc:\n"
    "            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)\n"
    "    results.append({'args': argv, 'code': code, 'stdout': out.getvalue(), 'stderr': err.getvalue()})\n"
    "assert 'torch' not in sys.modules and 'timm' not in sys.modules\n"
    "print(json.dumps(results))\n"
)


def run_many_without_torch(commands: list[list[str]], env: dict[str, str] | None = None) -> dict[tuple, dict]:
    """Run each command (argv after `halo-bench`) with torch and timm unimportable, all in one
    process; returns argv tuple -> {code, stdout, stderr}."""
    import json
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", MANY, json.dumps(commands)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    return {tuple(r["args"]): r for r in json.loads(done.stdout.strip().splitlines()[-1])}
