"""setup.py's version floors admit no release with a known vulnerability (and the pinned
requirements.txt stays inside setup.py's ranges). pip-audit cannot reach its database here:
the fixed versions below were looked up in the PyPI and GitHub advisory databases."""
import ast
import pathlib

from packaging.requirements import Requirement
from packaging.version import Version

REPO = pathlib.Path(__file__).resolve().parents[1]
# package -> (first release free of every advisory known for it, the advisories)
FIXED = {
    "pyarrow": ("23.0.1", "CVE-2023-47248 (fixed 14.0.1: code execution reading untrusted "
                          "Parquet/IPC), CVE-2024-52338 (17.0.0), CVE-2026-25087 (23.0.1)"),
    "aiohttp": ("3.14.5", "CVE-2026-34520 and the 3.13.4 set, CVE-2026-47265, CVE-2026-34993 "
                          "(3.14.0), GHSA-cq5v-8q36-5273 (3.14.3), PYSEC-2026-4369 (3.14.4), "
                          "GHSA-2g87-pp6c-29x5, GHSA-5wr8-gcqf-gqf3, GHSA-494j-54xm-rwp3 (by "
                          "3.14.5)"),
    "kafka-python": ("2.3.2", "CVE-2026-10142, CVE-2026-10143, GHSA-m3px-q5gj-j9x7, "
                              "GHSA-2jcm-hq8r-84wx"),
    "certifi": ("2024.7.4", "CVE-2022-23491 (TrustCor, 2022.12.7), CVE-2023-37920 (e-Tugra, "
                            "2023.7.22), CVE-2024-39689 (GLOBALTRUST, 2024.7.4)"),
    "redis": ("4.5.4", "CVE-2023-28858, CVE-2023-28859"),
    "numpy": ("1.22.2", "CVE-2021-41495, CVE-2021-41496, CVE-2021-34141, CVE-2021-33430"),
}


def _install_requires() -> list[Requirement]:
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            return [Requirement(item) for item in ast.literal_eval(node.value)]
    raise AssertionError("setup.py has no install_requires")


def _floor(requirement: Requirement) -> Version | None:
    bounds = [Version(spec.version) for spec in requirement.specifier
              if spec.operator in (">=", "==", "~=", ">")]
    return max(bounds, default=None)


def test_every_floor_is_at_least_the_fixed_version():
    requirements = {requirement.name: requirement for requirement in _install_requires()}
    for name, (fixed, advisories) in FIXED.items():
        assert name in requirements, name
        floor = _floor(requirements[name])
        assert floor is not None and floor >= Version(fixed), (
            f"setup.py allows {requirements[name]}: {advisories} are fixed in {fixed}")
    for requirement in requirements.values():
        assert _floor(requirement) is not None, f"{requirement} has no floor"


def test_pinned_requirements_are_inside_setup_ranges():
    ranges = {requirement.name: requirement.specifier for requirement in _install_requires()}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            pinned = Requirement(line)
            if pinned.name in ranges:
                version = next(iter(pinned.specifier)).version
                assert ranges[pinned.name].contains(version), line
