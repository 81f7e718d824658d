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
