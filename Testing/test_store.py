"""The model store: importing bundles / folders / checkpoints, verification, download with resume."""

from __future__ import annotations

import copy
import hashlib
import http.server
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from tiny_models import tiny_brain_card, write_model_folder, write_old_format_bundle

from SynthBrainLib import load_pipeline
from SynthBrainLib.errors import CardError, CheckpointError, ModelNotFoundError
from SynthBrainLib.models.store import ModelStore


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def bundle_store(tmp_path):
    """A store that knows the tiny Brain LDM card (shipped, without weights) and an old-format bundle."""
    shipped = tmp_path / "shipped"
    card = tiny_brain_card()
    bundle = write_old_format_bundle(card, tmp_path / "brain_image_synthesis_latent_diffusion_model")
    (shipped / card["id"]).mkdir(parents=True)
    (shipped / card["id"] / "card.json").write_text(json.dumps(card))
    return ModelStore(home=tmp_path / "home", shipped=[shipped]), bundle, shipped / card["id"] / "card.json"


def test_bundle_with_wrong_checksums_is_refused_then_accepted_explicitly(bundle_store, tmp_path):
    store, bundle, _ = bundle_store
    with pytest.raises(
        CheckpointError,
        match=(
            r"autoencoder.pt is not the published tiny-brain-ldm 'autoencoder' checkpoint \(md5 [0-9a-f]{32}, "
            r"expected md5 329e97b3"
        ),
    ):
        store.import_path(bundle)
    assert not (store.models_dir / "tiny-brain-ldm").exists()
    installed = store.import_path(bundle, allow_unverified=True)
    assert installed.complete, "the accepted bundle is installed with all its weights"
    assert installed.location == "cache", f"installed in {installed.location}, not the cache"
    checksums = {w.checksum for w in installed.weights.values()}
    assert checksums == {"mismatch-accepted"}, f"checksum states {checksums}"
    # config expressions are never run
    assert not (tmp_path / "PWNED").exists(), "a bundle config expression ran (PWNED in tmp_path)"
    assert not Path("PWNED").exists(), "a bundle config expression ran (PWNED in the working folder)"


def test_bundle_with_published_checksums_loads_old_checkpoints(bundle_store):
    store, bundle, card_path = bundle_store
    card = json.loads(card_path.read_text())
    card["weights"]["autoencoder"]["md5"] = _md5(bundle / "models" / "autoencoder.pt")
    card["weights"]["diffusion"]["md5"] = _md5(bundle / "models" / "model.pt")
    card_path.write_text(json.dumps(card))
    installed = store.import_path(bundle)
    assert {w.checksum for w in installed.weights.values()} == {"verified"}
    pipe = load_pipeline("tiny-brain-ldm", device="cpu", store=store)
    assert pipe.weights_info["diffusion"]["layout"] == "generative"
    assert pipe.weights_info["diffusion"]["checksum"] == "verified"
    assert pipe.generate(seed=1, steps=2).image.shape == (16, 16, 16)


def test_import_never_copies_twice(bundle_store):
    store, bundle, _ = bundle_store
    first = store.import_path(bundle, allow_unverified=True)
    mtimes = {k: w.path.stat().st_mtime_ns for k, w in first.weights.items()}
    second = store.import_path(bundle, allow_unverified=True)
    assert {k: w.path.stat().st_mtime_ns for k, w in second.weights.items()} == mtimes
    assert sorted(p.name for p in (store.models_dir / "tiny-brain-ldm").iterdir()) == [
        "autoencoder.pt",
        "install.json",
        "model.pt",
    ]


def test_bundle_that_matches_no_card(bundle_store):
    store, bundle, _ = bundle_store
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    config["diffusion_def"]["channels"] = [8, 32]
    (bundle / "configs" / "inference.json").write_text(json.dumps(config))
    with pytest.raises(
        CardError,
        match=(
            r"does not match a known model \(.*tiny-brain-ldm: 'diffusion_def.channels' is \[8, 32\], the card "
            r"has \[8, 16\]"
        ),
    ):
        store.import_path(bundle, allow_unverified=True)


def test_checkpoint_that_does_not_fit_is_refused_before_install(bundle_store):
    store, bundle, _ = bundle_store
    import torch

    sd = torch.load(bundle / "models" / "model.pt", weights_only=True)
    sd.pop(next(iter(sd)))
    torch.save(sd, bundle / "models" / "model.pt")
    with pytest.raises(
        CheckpointError, match="does not fit DiffusionModelUNet as described by the card: 1 missing key"
    ):
        store.import_path(bundle, allow_unverified=True)
    assert not (store.models_dir / "tiny-brain-ldm").exists()


def test_single_checkpoints_and_safetensors(tmp_path, store):
    folder = write_model_folder(tiny_brain_card("tiny-st"), tmp_path / "st", fmt="safetensors")
    card = json.loads((folder / "card.json").read_text())
    shipped = tmp_path / "shipped"
    (shipped / "tiny-st").mkdir(parents=True)
    card_only = copy.deepcopy(card)
    (shipped / "tiny-st" / "card.json").write_text(json.dumps(card_only))
    st = ModelStore(home=tmp_path / "home2", shipped=[shipped])
    with pytest.raises(ModelNotFoundError, match="needs the model it belongs to; give model=ID"):
        st.import_path(folder / "autoencoder.safetensors")
    with pytest.raises(
        ModelNotFoundError, match="component 'vae' is not a weight of tiny-st; choose one of autoencoder, diffusion"
    ):
        st.import_path(folder / "autoencoder.safetensors", model="tiny-st", component="vae")
    part = st.import_path(folder / "autoencoder.safetensors", model="tiny-st", component="autoencoder")
    assert part.missing == ["diffusion"]
    with pytest.raises(
        ModelNotFoundError,
        match=(
            r"weights of tiny-st \(model.safetensors\) are not installed .*; "
            r"import them: ModelStore\(\)\.import_path\(PATH, model='tiny-st', component='diffusion'\)"
        ),
    ):
        load_pipeline("tiny-st", device="cpu", store=st)
    st.import_path(folder / "model.safetensors", model="tiny-st", component="diffusion")
    pipe = load_pipeline("tiny-st", device="cpu", store=st)
    assert {w["checksum"] for w in pipe.weights_info.values()} == {"verified"}


def test_model_folder_import_copies_the_card(tmp_path, store):
    folder = write_model_folder(tiny_brain_card("custom-model"), tmp_path / "custom")
    installed = store.import_path(folder)
    assert (store.models_dir / "custom-model" / "card.json").is_file()
    assert "custom-model" in store.cards(), "the imported card is known to the store"
    assert installed.complete, "the imported folder is installed with all its weights"
    assert load_pipeline("custom-model", device="cpu", store=store).card.id == "custom-model"


def test_importing_a_card_file_imports_its_folder(tmp_path, store):
    folder = write_model_folder(tiny_brain_card("by-card"), tmp_path / "by-card")
    assert store.import_path(folder / "card.json").complete


def test_verify_detects_tampering(tmp_path, store):
    folder = write_model_folder(tiny_brain_card("tamper"), tmp_path / "t")
    store.import_path(folder)
    rows = store.verify("tamper")
    assert [r[2] for r in rows] == ["ok (verified)", "ok (verified)"]
    path = store.models_dir / "tamper" / "model.pt"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="changed since it was installed"):
        load_pipeline("tamper", device="cpu", store=store)
    bad = [r for r in store.verify("tamper") if not r[2].startswith("ok")]
    assert bad, "verify reports the tampered weights"
    assert bad[0][1] == "model.pt", f"verify blames {bad[0][1]}, not model.pt"


def test_edit_with_restored_time_is_still_caught(tmp_path, store):
    """Size and modification time are not proof: an in-place edit with its mtime put back is found."""
    folder = write_model_folder(tiny_brain_card("sneaky"), tmp_path / "s")
    store.import_path(folder)
    load_pipeline("sneaky", device="cpu", store=store)  # hashed once in this process
    path = store.models_dir / "sneaky" / "model.pt"
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size, "the edit kept the file size"
    assert path.stat().st_mtime_ns == before.st_mtime_ns, "the edit's modification time was put back"
    with pytest.raises(
        CheckpointError,
        match=r"changed since it was installed .*delete it and import them: "
        r"ModelStore\(\)\.import_path\(PATH, model='sneaky'\)",
    ):
        load_pipeline("sneaky", device="cpu", store=store)


def test_damaged_install_record_is_a_clear_error(tmp_path, store):
    folder = write_model_folder(tiny_brain_card("damaged"), tmp_path / "d")
    store.import_path(folder)
    (store.models_dir / "damaged" / "install.json").write_text("{bad")
    with pytest.raises(CheckpointError, match=r"install.json is damaged .*delete .* and install the model again"):
        store.locate("damaged")
    with pytest.raises(CheckpointError, match="install.json is damaged"):
        store.verify("damaged")


def test_non_finite_output_is_refused():
    from SynthBrainLib.errors import SynthBrainError
    from SynthBrainLib.outputs.results import SynthesisResult

    image = np.zeros((4, 4, 4), np.float32)
    image[1, 2, 3] = np.nan
    with pytest.raises(
        SynthBrainError,
        match=r"m1 produced 1 non-finite values .* in its image, so nothing was returned: its weights may be damaged",
    ):
        SynthesisResult(image=image, affine=np.eye(4), provenance={"model": {"id": "m1"}})


def test_half_done_import_does_not_hide_the_shipped_model(tmp_path):
    shipped = write_model_folder(tiny_brain_card("both"), tmp_path / "shipped" / "both")
    st = ModelStore(home=tmp_path / "home", shipped=[tmp_path / "shipped"])
    st.import_path(shipped / "model.pt", model="both", component="diffusion")  # only one of two weights
    installed = st.locate("both")
    assert installed.location == "shipped", f"located in {installed.location}, not the shipped folder"
    assert installed.complete, "the shipped model is complete"


def test_shipped_folder_with_corrupt_weights_is_refused(tmp_path):
    folder = write_model_folder(tiny_brain_card("shipped-one"), tmp_path / "shipped" / "shipped-one")
    (folder / "model.pt").write_bytes((folder / "model.pt").read_bytes()[:-5] + b"xxxxx")
    st = ModelStore(home=tmp_path / "home", shipped=[tmp_path / "shipped"])
    with pytest.raises(CheckpointError, match="checksum does not match card shipped-one"):
        load_pipeline("shipped-one", device="cpu", store=st)


def test_unknown_model_and_unpublished_weights(store):
    with pytest.raises(
        ModelNotFoundError,
        match="model 'nope' is not known; known models: brain-ldm, brainspade3d-image, brainspade3d-labels",
    ):
        store.locate("nope")
    with pytest.raises(
        ModelNotFoundError,
        match=r"weights of brain-ldm .* are not installed .*; download them: ModelStore\(\)\.download\('brain-ldm'\)",
    ):
        store.locate("brain-ldm")
    with pytest.raises(ModelNotFoundError, match="are not installed and not public"):
        store.locate("brainspade3d-labels")
    with pytest.raises(ModelNotFoundError, match="cannot download .* weights are not public"):
        store.download("brainspade3d-labels")


# ---- download against a local HTTP server with Range support ---------------------------------
class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    stop_after: int | None = None  # bytes to send before dropping the connection (first request only)
    requests: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        data = path.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        type(self).requests.append(rng)
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if type(self).stop_after is not None:
            self.wfile.write(body[: type(self).stop_after])
            type(self).stop_after = None
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **k: _RangeHandler(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _RangeHandler.requests = []
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _downloadable(tmp_path, http_root, tamper: bool = False) -> ModelStore:
    root, url = http_root
    folder = write_model_folder(tiny_brain_card("dl-model"), tmp_path / "src")
    card = json.loads((folder / "card.json").read_text())
    for w in card["weights"].values():
        (root / w["file"]).write_bytes((folder / w["file"]).read_bytes())
        w["url"] = f"{url}/{w['file']}"
    if tamper:
        (root / "model.pt").write_bytes(b"x" + (root / "model.pt").read_bytes()[1:])
    shipped = tmp_path / "shipped"
    (shipped / "dl-model").mkdir(parents=True)
    (shipped / "dl-model" / "card.json").write_text(json.dumps(card))
    return ModelStore(home=tmp_path / "home", shipped=[shipped])


def test_download_verifies_and_resumes(tmp_path, http_root):
    st = _downloadable(tmp_path, http_root)
    _RangeHandler.stop_after = 1000  # the first transfer breaks after 1000 bytes
    with pytest.raises(CheckpointError, match="run the command again to resume"):
        st.download("dl-model")
    parts = list((st.models_dir / "dl-model").glob("*.part"))
    assert len(parts) == 1, f"partial files after the broken transfer: {parts}"
    assert parts[0].stat().st_size == 1000, f"the partial file holds {parts[0].stat().st_size} bytes"
    progress = []
    installed = st.download("dl-model", progress=lambda f, done, total: progress.append((f, done, total)))
    assert installed.complete, "the resumed download installs every weight"
    checksums = {w.checksum for w in installed.weights.values()}
    assert checksums == {"verified"}, f"checksum states {checksums}"
    assert "bytes=1000-" in _RangeHandler.requests
    assert not list((st.models_dir / "dl-model").glob("*.part"))
    assert progress[-1][1] == progress[-1][2]
    assert load_pipeline("dl-model", device="cpu", store=st).generate(seed=0, steps=1).image.shape == (16, 16, 16)
    # a second download fetches nothing
    count = len(_RangeHandler.requests)
    st.download("dl-model")
    assert len(_RangeHandler.requests) == count


def test_download_with_wrong_checksum_leaves_nothing(tmp_path, http_root):
    st = _downloadable(tmp_path, http_root, tamper=True)
    with pytest.raises(CheckpointError, match="model.pt: sha256 .* does not match the expected"):
        st.download("dl-model")
    folder = st.models_dir / "dl-model"
    assert not (folder / "model.pt").exists(), "the weights with the wrong checksum were kept"
    assert not list(folder.glob("*.part")), "a partial file was left behind"


def test_cache_location_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHBRAIN_HOME", str(tmp_path / "elsewhere"))
    assert ModelStore().models_dir == tmp_path / "elsewhere" / "models"
    assert os.fspath(ModelStore(home=tmp_path / "flag").models_dir) == os.fspath(tmp_path / "flag" / "models")
