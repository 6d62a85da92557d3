"""The extension's packaging: CMake files, catalog entry, icon, requirements, module folder, docs."""

from __future__ import annotations

import ast
import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MODULE_DIR = REPO / "SynthBrain"
TOP_CMAKE = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
MODULE_CMAKE = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")

#: Slicer's extension catalog entry schema v1.0.2 (Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json).
CATALOG_SCHEMA = {
    "required": ["$schema", "category", "scm_url"],
    "properties": {
        "$schema": {"type": str},
        "category": {"type": str},
        "scm_url": {"type": str},
        "scm_revision": {"type": str},
        "scm_type": {"type": str, "enum": ["git", "local"]},
        "build_dependencies": {"type": list, "items": str},
        "dicom_support_rule": {"type": str},
        "build_subdirectory": {"type": str},
        "enabled": {"type": bool},
        "tier": {"type": int, "minimum": 1, "maximum": 5},
    },
}


def cmake_set(text: str, name: str) -> str:
    match = re.search(rf'set\({name}\s+"([^"]*)"\)', text)
    assert match, f"{name} is not set"
    return match.group(1)


def cmake_list(text: str, name: str) -> list[str]:
    match = re.search(rf"set\({name}\s+(.*?)\)", text, re.S)
    assert match, name
    return [item.replace("${MODULE_NAME}", "SynthBrain") for item in match.group(1).split()]


def module_categories() -> list[str]:
    tree = ast.parse((MODULE_DIR / "SynthBrain.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "self.parent.categories":
            # each category is translated: [_("Simulation")]
            return [
                ast.literal_eval(e.args[0]) if isinstance(e, ast.Call) else ast.literal_eval(e) for e in node.value.elts
            ]
    raise AssertionError("no categories")


def test_top_level_cmake_has_the_extension_fields():
    for field in (
        "EXTENSION_HOMEPAGE",
        "EXTENSION_CATEGORY",
        "EXTENSION_CONTRIBUTORS",
        "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL",
        "EXTENSION_SCREENSHOTURLS",
    ):
        assert cmake_set(TOP_CMAKE, field).strip(), field
    assert cmake_set(TOP_CMAKE, "EXTENSION_DEPENDS") == "PyTorch"
    assert cmake_set(TOP_CMAKE, "EXTENSION_ICONURL").endswith("SynthBrain/Resources/Icons/SynthBrain.png")
    for line in (
        "project(SynthBrain)",
        "find_package(Slicer REQUIRED)",
        "include(${Slicer_USE_FILE})",
        "add_subdirectory(SynthBrain)",
        "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
        "include(${Slicer_EXTENSION_CPACK})",
    ):
        assert line in TOP_CMAKE, line
    assert (
        TOP_CMAKE.index("find_package(Slicer")
        < TOP_CMAKE.index("add_subdirectory(SynthBrain)")
        < TOP_CMAKE.index("Slicer_EXTENSION_CPACK")
    )


def test_module_cmake_lists_every_script_and_resource():
    scripts = set(cmake_list(MODULE_CMAKE, "MODULE_PYTHON_SCRIPTS"))
    resources = set(cmake_list(MODULE_CMAKE, "MODULE_PYTHON_RESOURCES"))
    on_disk_scripts = {"SynthBrain.py"} | {
        f"SynthBrainSlicer/{p.name}" for p in (MODULE_DIR / "SynthBrainSlicer").glob("*.py")
    }
    assert scripts == on_disk_scripts
    dev_only = {"Resources/Icons/make_icon.py"}
    on_disk_resources = {
        p.relative_to(MODULE_DIR).as_posix()
        for p in (MODULE_DIR / "Resources").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    } - dev_only
    assert resources == on_disk_resources
    for item in scripts | resources:
        assert (MODULE_DIR / item).is_file(), item
    build = re.search(r"slicerMacroBuildScriptedModule\((.*?)\)", MODULE_CMAKE, re.S).group(1)
    for word in (
        "NAME ${MODULE_NAME}",
        "SCRIPTS ${MODULE_PYTHON_SCRIPTS}",
        "RESOURCES ${MODULE_PYTHON_RESOURCES}",
        "WITH_GENERIC_TESTS",
    ):
        assert word in build, word
    testing = re.search(r"if\(BUILD_TESTING\)(.*?)endif\(\)", MODULE_CMAKE, re.S)
    assert testing is not None, "the module CMakeLists.txt has an if(BUILD_TESTING) block"
    scripts = re.findall(r"slicer_add_python_unittest\(SCRIPT\s+(\S+)\)", testing.group(1))
    assert scripts == ["${MODULE_NAME}.py"], f"the self-test registered as the Slicer template does it: {scripts}"


def test_the_self_test_is_installed_with_the_module():
    """Reload and Test in an installed extension runs SynthBrainTest: its code must be installed."""
    module = ast.parse((MODULE_DIR / "SynthBrain.py").read_text())
    bases = [
        ast.unparse(b)
        for c in ast.walk(module)
        if isinstance(c, ast.ClassDef) and c.name == "SynthBrainTest"
        for b in c.bases
    ]
    assert "selftest.SynthBrainSelfTest" in bases, f"SynthBrainTest is the shipped self-test: {bases}"
    assert "SynthBrainSlicer/selftest.py" in cmake_list(MODULE_CMAKE, "MODULE_PYTHON_SCRIPTS"), "and it is installed"
    selftest = ast.parse((MODULE_DIR / "SynthBrainSlicer" / "selftest.py").read_text())
    base = next(c for c in selftest.body if isinstance(c, ast.ClassDef) and c.name == "SynthBrainSelfTest")
    assert [ast.unparse(b) for b in base.bases] == ["ScriptedLoadableModuleTest"], "a Slicer unittest class"
    assert not (MODULE_DIR / "Testing").exists(), "no second copy of the self-test that only a checkout has"


def test_module_cmake_ships_the_library_and_demo_models():
    glob = re.search(r"file\(GLOB_RECURSE _synthbrain_shipped_files(.*?)\)", MODULE_CMAKE, re.S).group(1)
    assert "${_synthbrain_root}/SynthBrainLib/*.py" in glob, "the library's Python files are shipped"
    assert "${_synthbrain_root}/Resources/Models/*" in glob, "the demo models are shipped"
    # every kind of data file the pip package ships (pyproject package-data) ships in Slicer too
    package_data = re.search(r"SynthBrainLib = \[(.*?)\]", (REPO / "pyproject.toml").read_text()).group(1)
    for pattern in re.findall(r'"([^"]+)"', package_data):
        assert f"${{_synthbrain_root}}/SynthBrainLib/*{Path(pattern).suffix}" in glob, pattern
    assert "DESTINATION ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/${_dir}" in MODULE_CMAKE
    assert "${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/${_file}" in MODULE_CMAKE


def test_only_the_module_file_at_the_top_of_the_module_folder():
    """Slicer loads every *.py at the top of a module folder as a module: helpers live in SynthBrainSlicer/."""
    assert sorted(p.name for p in MODULE_DIR.glob("*.py")) == ["SynthBrain.py"]


def test_the_catalog_entry_template_follows_schema_v1_0_2():
    """The entry for Slicer's ExtensionsIndex lives in docs/slicer.md until there is a repository to name."""
    block = re.search(r"## Publishing.*?```json\n(.*?)\n```", (REPO / "docs" / "slicer.md").read_text(), re.S)
    entry = json.loads(block.group(1))
    assert (
        entry["$schema"]
        == "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json#"
    )
    for key in CATALOG_SCHEMA["required"]:
        assert key in entry, key
    for key, value in entry.items():
        assert key in CATALOG_SCHEMA["properties"], f"{key} is not allowed (additionalProperties: false)"
        rule = CATALOG_SCHEMA["properties"][key]
        assert isinstance(value, rule["type"]), f"{key} is not a {rule['type'].__name__}: {value!r}"
        assert not (rule["type"] is int and isinstance(value, bool)), f"{key} is a bool, not an integer"
        if "enum" in rule:
            assert value in rule["enum"], key
        if "items" in rule:
            assert all(isinstance(v, rule["items"]) for v in value), key
        if "minimum" in rule:
            assert rule["minimum"] <= value <= rule["maximum"], key
    assert entry["build_dependencies"] == [cmake_set(TOP_CMAKE, "EXTENSION_DEPENDS")]
    assert entry["category"] == cmake_set(TOP_CMAKE, "EXTENSION_CATEGORY") == module_categories()[0]
    assert entry["scm_url"] == "SYNTHBRAIN_REPOSITORY_URL.git", "the repository is named when publishing, not invented"


def test_no_repository_url_is_invented():
    assert not (REPO / "SynthBrain.json").exists(), "the catalog entry is not a file of the extension"
    for field in ("EXTENSION_HOMEPAGE", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        value = cmake_set(TOP_CMAKE, field)
        assert value.startswith("${"), f"{field} follows SYNTHBRAIN_REPOSITORY_URL, not a written-in URL: {value}"
    assert "github.com" not in TOP_CMAKE, "no repository URL is written into the build"


def read_png(path: Path) -> np.ndarray:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        length, tag = struct.unpack(">I4s", data[pos : pos + 8])
        chunks.setdefault(tag, b"")
        chunks[tag] += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert depth == 8, f"{path.name}: bit depth {depth}, the test decoder reads 8"
    assert colour in (2, 6), f"{path.name}: colour type {colour}, the test decoder reads RGB or RGBA"
    assert interlace == 0, f"{path.name} is interlaced"
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(chunks[b"IDAT"])
    stride = width * channels
    rows, previous = [], np.zeros(stride, np.int32)
    for r in range(height):
        kind, line = (
            raw[r * (stride + 1)],
            np.frombuffer(raw[r * (stride + 1) + 1 : (r + 1) * (stride + 1)], np.uint8).astype(np.int32),
        )
        assert kind in (0, 2), "the test decoder knows filters 0 and 2"
        current = line if kind == 0 else (line + previous) % 256
        rows.append(current)
        previous = current
    return np.array(rows, np.uint8).reshape(height, width, channels)


def test_icon_is_a_real_128_pixel_picture():
    image = read_png(MODULE_DIR / "Resources" / "Icons" / "SynthBrain.png")
    assert image.shape[:2] == (128, 128)
    colours, counts = np.unique(image[..., :3].reshape(-1, 3), axis=0, return_counts=True)
    assert len(colours) > 100, f"the icon has only {len(colours)} colours (blank?)"
    assert counts.max() < 0.6 * 128 * 128, "one colour covers 60% of the icon (a flat placeholder?)"
    assert (MODULE_DIR / "Resources" / "Icons" / "NOTICE_MNI152.txt").is_file()  # rendered from the MNI template


def test_every_console_call_in_the_docs_exists():
    methods = set()
    # SynthBrainLogic and the calls it inherits: on a patient's scan, and of the modality-image models
    for part in ("logic.py", "scan_calls.py", "modality_calls.py"):
        tree = ast.parse((MODULE_DIR / "SynthBrainSlicer" / part).read_text(encoding="utf-8"))
        methods |= {f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
    for doc in (REPO / "docs" / "slicer.md", REPO / "README.md"):
        called = set(re.findall(r"logic\.(\w+)\(", doc.read_text(encoding="utf-8")))
        assert called, f"{doc.name} shows console calls"
        assert called <= methods | {"getModuleLogic"}, (
            f"{doc.name} calls logic methods that do not exist: {sorted(called - methods)}"
        )
