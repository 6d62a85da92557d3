"""SynthBrain as a Python package: the wheel and sdist that `python -m build` makes, installed into a
fresh virtual environment without the source tree, run the main job offline."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run(command, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, command))} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def wheel_contents(path: Path) -> dict[str, str]:
    with zipfile.ZipFile(path) as wheel:
        return {name: hashlib.sha256(wheel.read(name)).hexdigest() for name in wheel.namelist()}


def clean_copy(target: Path) -> Path:
    """The files of a clean clone (tracked, or new and not ignored): no build/ or egg-info leftovers."""
    listed = run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """sdist + wheel (built from that sdist, as `python -m build` does), and a wheel built straight
    from the tree. --no-isolation: the setuptools already installed builds it, offline."""
    base = tmp_path_factory.mktemp("dist")
    source = clean_copy(base / "source")
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", base / "from-sdist", source])
    run([sys.executable, "-m", "build", "--no-isolation", "--wheel", "--outdir", base / "from-tree", source])
    return {
        "sdist": next((base / "from-sdist").glob("*.tar.gz")),
        "wheel": next((base / "from-sdist").glob("*.whl")),
        "tree_wheel": next((base / "from-tree").glob("*.whl")),
    }


def test_the_package_list_names_every_library_package():
    import tomllib
    from setuptools import find_packages

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set(find_packages(where=str(REPO), include=["SynthBrainLib*"]))
    assert found - listed == set(), f"packages missing from pyproject's list: {sorted(found - listed)}"


def test_the_developer_tools_are_a_distribution_of_their_own():
    """devtools/ is the synthbrain-dev distribution: its own package list, its own command, the
    library's version; the user's package lists neither its packages nor its command."""
    import tomllib
    from setuptools import find_packages

    from SynthBrainLib import __version__

    user = tomllib.loads((REPO / "pyproject.toml").read_text())
    dev = tomllib.loads((REPO / "devtools" / "pyproject.toml").read_text())
    assert dev["project"]["name"] == "synthbrain-dev", f"distribution name: {dev['project']['name']}"
    assert dev["project"]["version"] == __version__, f"synthbrain-dev {dev['project']['version']} vs {__version__}"
    assert "synthbrain" in dev["project"]["dependencies"], "synthbrain-dev depends on the library"
    assert dev["project"]["scripts"] == {"synthbrain-dev": "synthbrain_dev.cli:main"}, dev["project"]["scripts"]
    found = set(find_packages(where=str(REPO / "devtools"), include=["synthbrain_dev*"]))
    listed = set(dev["tool"]["setuptools"]["packages"])
    assert found == listed, f"devtools/pyproject.toml lists {sorted(listed)}, the tree has {sorted(found)}"
    assert user["project"]["scripts"] == {"synthbrain": "SynthBrainLib.cli:main"}, user["project"]["scripts"]
    tools = [p for p in user["tool"]["setuptools"]["packages"] if ".tools" in p or p.startswith("synthbrain_dev")]
    assert tools == [], f"the user's package lists developer tools: {tools}"


@pytest.mark.slow
def test_wheel_and_sdist_pass_twine_check(built):
    done = run([sys.executable, "-m", "twine", "check", "--strict", built["sdist"], built["wheel"]])
    assert done.stdout.count("PASSED") == 2, done.stdout


@pytest.mark.slow
def test_the_sdist_builds_the_same_wheel(built):
    from_sdist, from_tree = wheel_contents(built["wheel"]), wheel_contents(built["tree_wheel"])
    assert from_sdist.keys() == from_tree.keys(), f"files differ: {sorted(set(from_sdist) ^ set(from_tree))}"
    assert from_sdist == from_tree, "same files, different contents"


@pytest.mark.slow
def test_the_wheel_holds_the_demo_models_and_licences(built):
    names = set(wheel_contents(built["wheel"]))
    for model in ("brain-ldm-demo", "labels-demo", "label2image-demo"):
        assert f"synthbrain_demo_models/{model}/card.json" in names, f"{model} card shipped"
    assert any(n.endswith("dist-info/licenses/LICENSE") for n in names), "licence shipped"
    assert "synthbrain_demo_models/NOTICE_MNI152.txt" in names, "the MNI152 notice ships with the demo models"
    assert "SynthBrainLib/models/cards/brain-ldm.json" in names, "built-in cards shipped"


@pytest.mark.slow
def test_the_wheel_holds_no_developer_tools(built):
    names = set(wheel_contents(built["wheel"]))
    tools = sorted(n for n in names if n.startswith(("SynthBrainLib/tools/", "synthbrain_dev/")))
    assert tools == [], f"developer tools in the synthbrain wheel: {tools[:5]}"
    entry_points = next(n for n in names if n.endswith("dist-info/entry_points.txt"))
    with zipfile.ZipFile(built["wheel"]) as wheel:
        commands = wheel.read(entry_points).decode()
    assert "synthbrain-dev" not in commands, f"the wheel installs the developers' command: {commands}"


@pytest.mark.slow
def test_the_developer_tools_build_as_their_own_wheel(built, tmp_path):
    source = built["sdist"].parent.parent / "source" / "devtools"
    run([sys.executable, "-m", "build", "--no-isolation", "--wheel", "--outdir", tmp_path, source])
    names = set(wheel_contents(next(tmp_path.glob("synthbrain_dev-*.whl"))))
    for module in ("cli.py", "bench/runs.py", "evaluation/metrics.py", "training/recipes.py", "phantoms/template.py"):
        assert f"synthbrain_dev/{module}" in names, f"synthbrain_dev/{module} is in the developer wheel"
    assert "synthbrain_dev/phantoms/NOTICE_MNI152.txt" in names, "the phantoms' MNI152 notice ships with them"
    assert not any(n.startswith("SynthBrainLib/") for n in names), "the developer wheel does not copy the library"


@pytest.mark.slow
def test_installed_wheel_runs_the_main_job_and_insertion(built, tmp_path):
    """A bare venv, the CPU torch first (as the README says), then the wheel with pip's dependency
    resolution and nothing borrowed: a dependency missing from pyproject.toml fails here."""
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    torch_version = os.environ.get("SYNTHBRAIN_TORCH_VERSION", "2.13.0")
    run([python, "-m", "pip", "install", "--quiet", f"torch=={torch_version}"])
    run([python, "-m", "pip", "install", "--quiet", built["wheel"]])
    work = tmp_path / "elsewhere"  # not the repository: the source tree is not on the path
    work.mkdir()
    env = dict(
        os.environ,
        SYNTHBRAIN_HOME=str(tmp_path / "home"),
        SYNTHBRAIN_SHIPPED_MODELS="",
        OMP_NUM_THREADS="1",
        PYTHONPATH="",
    )
    where = run(
        [
            python,
            "-c",
            "import SynthBrainLib, synthbrain_demo_models, scipy, monai; "
            "print(SynthBrainLib.__file__); print(synthbrain_demo_models.__file__); print(scipy.__file__)",
        ],
        cwd=work,
        env=env,
    ).stdout.split()
    assert all(path.startswith(str(venv)) for path in where), f"imported from outside the new environment: {where}"
    listing = run([venv / "bin" / "synthbrain", "models", "list"], cwd=work, env=env).stdout
    assert any(line.startswith("brain-ldm-demo") and "shipped" in line for line in listing.splitlines()), listing
    synthbrain = venv / "bin" / "synthbrain"
    brain = ["--model", "brain-ldm-demo", "--age", "70", "--sex", "female", "--seed", "1", "--quiet"]
    run(
        [synthbrain, "generate", *brain, "-o", work / "brain.nii.gz", "--preview", work / "brain.png"],
        cwd=work,
        env=env,
    )
    assert (work / "brain.nii.gz").is_file(), "image written"
    assert (work / "brain.json").is_file(), "provenance written"
    assert (work / "brain.png").stat().st_size > 1000, "preview written"
    run([python, REPO / ".ci" / "paint_lesion.py", work / "brain.nii.gz", work / "wmh.nii.gz"], cwd=work, env=env)
    insert = ["--lesions", work / "wmh.nii.gz", "--sequence", "T1", "--model", "label2image-demo", "--seed", "1"]
    run(
        [synthbrain, "insert-lesions", work / "brain.nii.gz", *insert, "--quiet", "-o", work / "lesion.nii.gz"],
        cwd=work,
        env=env,
    )
    assert (work / "lesion.nii.gz").is_file(), "scan with the inserted lesion written"
    assert (work / "lesion-lesions.nii.gz").is_file(), "inserted lesion mask written"
