"""Packaging hook: the dataset registry lives at the repository's top level (one copy,
where users edit it); a built wheel carries it inside the package as well, so
`pip install halo-bench` works without the repository."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

REGISTRY = Path(__file__).parent / "datasets.yaml"


class BuildPyWithRegistry(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:  # an editable install reads the top-level file in place
            target = Path(self.build_lib) / "halo_bench" / "datasets.yaml"
            target.parent.mkdir(parents=True, exist_ok=True)
            self.copy_file(str(REGISTRY), str(target))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if not self.editable_mode:
            outputs.append(str(Path(self.build_lib) / "halo_bench" / "datasets.yaml"))
        return outputs


setup(cmdclass={"build_py": BuildPyWithRegistry})
