"""Case table 6: the Python API - wrong types and values straight into the library."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from hostile.fixtures import (
    DEMO_AFFINE,
    SHIPPED,
    deep_json,
    nifti_header_bomb,
    phantom_labels,
    save_nii,
    truncate,
    write_payload,
)
from hostile.harness import G, api, marker, model_folder

_PIPES: dict[str, Any] = {}


def pipe(model: str):
    if model not in _PIPES:
        import SynthBrainLib
        from SynthBrainLib.models.store import ModelStore

        _PIPES[model] = SynthBrainLib.load_pipeline(model, device="cpu", store=ModelStore(home=G.root / "api-home"))
    return _PIPES[model]


def define_api() -> None:
    import torch

    import SynthBrainLib
    from SynthBrainLib.models.store import ModelStore

    c = "api"
    store = lambda ctx: ModelStore(home=ctx.home)  # noqa: E731

    def lp(model="brain-ldm-demo", **kw):
        return lambda ctx: SynthBrainLib.load_pipeline(model, store=store(ctx), **kw)

    # ---- load_pipeline ---------------------------------------------------------------------------
    for desc, kw in [
        ("device=0", dict(device=0)),
        ("device=['cpu']", dict(device=["cpu"])),
        ("device=1.5", dict(device=1.5)),
        ("device='cuda'", dict(device="cuda")),
        ("precision=5", dict(precision=5)),
        ("precision='float16' (CPU)", dict(precision="float16")),
        ("precision=['float32']", dict(precision=["float32"])),
        ("decode=5", dict(decode=5)),
        ("decode=['full']", dict(decode=["full"])),
        ("cache_size=-1", dict(cache_size=-1)),
        ("cache_size=True", dict(cache_size=True)),
        ("cache_size=1.5", dict(cache_size=1.5)),
        ("compile='x'", dict(compile="x")),
        ("tiles='x'", dict(tiles="x")),
        ("half='yes'", dict(half="yes")),
        ("half=True on the CPU", dict(half=True)),
        ("unknown option foo=1", dict(foo=1)),
    ]:
        api(c, f"load_pipeline('brain-ldm-demo', {desc})", lp(**kw))
    for desc, model in [
        ("None", None),
        ("123", 123),
        ("''", ""),
        ("'../../../etc'", "../../../etc"),
        ("b'brain-ldm-demo'", b"brain-ldm-demo"),
        ("['brain-ldm-demo']", ["brain-ldm-demo"]),
    ]:
        api(c, f"load_pipeline({desc})", lp(model))
    api(
        c,
        "load_pipeline('brain-ldm-demo', store='x')",
        lambda ctx: SynthBrainLib.load_pipeline("brain-ldm-demo", store="x"),
    )
    api(
        c,
        "load_pipeline(Path(<shipped folder>), device=torch.device('cpu'))",
        lambda ctx: SynthBrainLib.load_pipeline(
            SHIPPED / "brain-ldm-demo", device=torch.device("cpu"), store=store(ctx)
        ),
        expect="good",
    )
    api(c, "load_pipeline('brain-ldm-demo', device=None)", lp(device=None), expect="good")

    # ---- brain generate ----------------------------------------------------------------------------
    def gen(**kw):
        args = dict(seed=1, preview=True, steps=2)
        args.update(kw)
        return lambda ctx: pipe("brain-ldm-demo").generate(**args)

    bad_gen = [
        ("sex=['female']", dict(sex=["female"])),
        ("sex={'female': 1}", dict(sex={"female": 1})),
        ("sex=1", dict(sex=1)),
        ("sex=b'female'", dict(sex=b"female")),
        ("age=10**400", dict(age=10**400)),
        ("age=complex(70, 1)", dict(age=complex(70, 1))),
        ("age=[70]", dict(age=[70])),
        ("age=np.array([70., 71.])", dict(age=np.array([70.0, 71.0]))),
        ("age=nan", dict(age=float("nan"))),
        ("age=True", dict(age=True)),
        ("age=-inf", dict(age=-float("inf"))),
        ("age=object()", dict(age=object())),
        ("sampler=5", dict(sampler=5)),
        ("sampler=''", dict(sampler="")),
        ("sampler=['ddim']", dict(sampler=["ddim"])),
        ("steps=2.5", dict(steps=2.5)),
        ("steps=True", dict(steps=True)),
        ("steps='2'", dict(steps="2")),
        ("steps=-1", dict(steps=-1)),
        ("steps=10**30", dict(steps=10**30)),
        ("seed=True", dict(seed=True)),
        ("seed=-1", dict(seed=-1)),
        ("seed=2**64", dict(seed=2**64)),
        ("seed=1.0", dict(seed=1.0)),
        ("seed='1'", dict(seed="1")),
        ("seed=np.float64(1)", dict(seed=np.float64(1))),
        ("cancel='yes'", dict(cancel="yes")),
        ("cancel=True", dict(cancel=True)),
        ("cancel=5", dict(cancel=5)),
        ("progress=5", dict(progress=5)),
        ("progress='x'", dict(progress="x")),
        ("raw='x'", dict(raw="x")),
        ("raw=[('age', 0.5)]", dict(raw=[("age", 0.5)])),
        ("raw={'age': 'abc'}", dict(raw={"age": "abc"})),
        ("raw={'age': 0.5} with age=70", dict(raw={"age": 0.5}, age=70)),
        ("raw={5: 0.5}", dict(raw={5: 0.5})),
        ("unknown condition height=180", dict(height=180)),
        ("raw={'sex': 2}", dict(raw={"sex": 2})),
    ]
    for desc, kw in bad_gen:
        api(c, f"brain generate({desc})", gen(**kw))
    ev = threading.Event()
    ev.set()
    api(c, "brain generate(cancel=<set Event>) (cancelled cleanly)", gen(cancel=ev))
    api(c, "brain generate(cancel=lambda: True) (cancelled cleanly)", gen(cancel=lambda: True))
    for desc, kw in [
        ("age='70' (numeric string)", dict(age="70")),
        ("seed=np.uint64(5)", dict(seed=np.uint64(5))),
        ("steps=np.int64(2)", dict(steps=np.int64(2))),
        ("sex=' Male '", dict(sex=" Male ")),
        ("age=np.float32(70)", dict(age=np.float32(70))),
        ("preview='yes'", dict(preview="yes")),
    ]:
        api(c, f"brain generate({desc})", gen(**kw), expect="either")
    api(
        c,
        "brain generate(age=70, sex='female') (valid)",
        gen(age=70, sex="female"),
        expect="good",
        check=lambda ctx, r: (
            None
            if r.image is not None and r.image.shape == (64, 80, 64) and np.isfinite(r.image).all()
            else "bad image"
        ),
    )

    # ---- labels generate -------------------------------------------------------------------------------
    def lgen(**kw):
        args = dict(seed=3, preview=True, steps=2)
        args.update(kw)
        return lambda ctx: pipe("labels-demo").generate(**args)

    for desc, kw in [
        ("wmh=-0.1", dict(wmh=-0.1)),
        ("wmh='x'", dict(wmh="x")),
        ("wmh=[0.1]", dict(wmh=[0.1])),
        ("tumour=10**400", dict(tumour=10**400)),
        ("raw={'wmh': 2}", dict(raw={"wmh": 2})),
        ("age=70 (not a condition)", dict(age=70)),
        ("cancel='no'", dict(cancel="no")),
    ]:
        api(c, f"labels generate({desc})", lgen(**kw))
    # ---- label2image generate -------------------------------------------------------------------------
    base = phantom_labels()

    def l2i(labels, **kw):
        args = dict(affine=DEMO_AFFINE, seed=1)
        args.update(kw)
        return lambda ctx: pipe("label2image-demo").generate(labels() if callable(labels) else labels, **args)

    for desc, labels, kw in [
        ("complex label array", lambda: base.astype(np.complex64), {}),
        ("string label array", lambda: np.full((8, 8, 8), "a"), {}),
        ("object array of strings", lambda: np.full((8, 8, 8), "a", dtype=object), {}),
        ("empty (0,0,0) array", lambda: np.zeros((0, 0, 0), np.uint8), {}),
        ("empty (10,0,0,0) partial volumes", lambda: np.zeros((10, 0, 0, 0), np.float32), {}),
        ("labels=None", None, {}),
        ("0-d array", lambda: np.array(3), {}),
        ("2D array", lambda: base[:, :, 10], {}),
        ("5D array", lambda: base[None, None], {}),
        ("int64 label 2**62", lambda: np.where(base == 6, np.int64(2**62), base.astype(np.int64)), {}),
        (
            "uint64 max label",
            lambda: np.where(base == 6, np.uint64(np.iinfo(np.uint64).max), base.astype(np.uint64)),
            {},
        ),
        ("negative labels", lambda: base.astype(np.int8) - 1, {}),
        ("fractional float labels", lambda: base + 0.25, {}),
        ("NaN float labels", lambda: np.where(base == 6, np.nan, base), {}),
        ("ragged nested list", lambda: [[[0, 1], [2]], [[3, 4], [5, 6]]], {}),
        ("structured (RGB) dtype", lambda: np.zeros((8, 8, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")]), {}),
        ("affine='eye'", lambda: base, dict(affine="eye")),
        ("affine=np.eye(3)", lambda: base, dict(affine=np.eye(3))),
        ("affine all ones (singular)", lambda: base, dict(affine=np.ones((4, 4)))),
        ("affine with NaN", lambda: base, dict(affine=np.full((4, 4), np.nan))),
        ("affine=None with labels off the model grid", lambda: base[:40], dict(affine=None)),
        ("affine object array of strings", lambda: base, dict(affine=np.full((4, 4), "x", dtype=object))),
        ("affine complex", lambda: base, dict(affine=DEMO_AFFINE.astype(np.complex128) + 1j)),
        ("affine=5", lambda: base, dict(affine=5)),
        ("sequence=5", lambda: base, dict(sequence=5)),
        ("sequence=None", lambda: base, dict(sequence=None)),
        ("sequence='PD'", lambda: base, dict(sequence="PD")),
        ("alignment=5", lambda: base, dict(alignment=5)),
        ("alignment=['world']", lambda: base, dict(alignment=["world"])),
        ("sampler='ddim' (SPADE GAN)", lambda: base, dict(sampler="ddim")),
        ("steps=2 (SPADE GAN)", lambda: base, dict(steps=2)),
        ("seed=True", lambda: base, dict(seed=True)),
        ("seed=-5", lambda: base, dict(seed=-5)),
        ("cancel='yes'", lambda: base, dict(cancel="yes")),
        ("progress=5", lambda: base, dict(progress=5)),
    ]:
        api(c, f"label2image generate({desc})", l2i(labels, **kw))
    for desc, labels, kw in [
        ("bool label array", lambda: base > 2, {}),
        ("torch tensor labels", lambda: torch.from_numpy(base.astype(np.int64)), {}),
        ("labels as (1,X,Y,Z)", lambda: base[None], {}),
        ("affine as nested lists", lambda: base, dict(affine=DEMO_AFFINE.tolist())),
    ]:
        api(c, f"label2image generate({desc})", l2i(labels, **kw), expect="either")
    api(c, "label2image generate(uint8 labels, sequence='T2') (valid)", l2i(lambda: base, sequence="T2"), expect="good")
    # ---- ModelStore -------------------------------------------------------------------------------------
    api(c, "ModelStore(home=123)", lambda ctx: ModelStore(home=123))
    api(c, "ModelStore(home=['x'])", lambda ctx: ModelStore(home=["x"]))
    api(c, "ModelStore(shipped=5)", lambda ctx: ModelStore(home=ctx.home, shipped=5))
    for desc, arg in [
        ("123", 123),
        ("None", None),
        ("b'/tmp'", b"/tmp"),
        ("''", ""),
        ("['x']", ["x"]),
        ("'<missing, name with newline>'", "missing\nfile.pt"),
    ]:
        api(c, f"ModelStore().import_path({desc})", lambda ctx, arg=arg: store(ctx).import_path(arg))
    api(
        c,
        "ModelStore().import_path(<pickle payload .pt>, model='brain-ldm-demo', component='diffusion', "
        "allow_unverified=True)",
        lambda ctx: store(ctx).import_path(
            ctx.d / "evil.pt", model="brain-ldm-demo", component="diffusion", allow_unverified=True
        ),
        setup=lambda ctx: write_payload(ctx.d / "evil.pt", "zip", marker("api-payload")),
    )
    api(
        c,
        "ModelStore().import_path(<checkpoint>, model=5, component='diffusion')",
        lambda ctx: store(ctx).import_path(
            SHIPPED / "brain-ldm-demo" / "diffusion.safetensors", model=5, component="diffusion"
        ),
    )
    api(
        c,
        "ModelStore().import_path(<checkpoint>, model='brain-ldm-demo', component=['diffusion'])",
        lambda ctx: store(ctx).import_path(
            SHIPPED / "brain-ldm-demo" / "diffusion.safetensors", model="brain-ldm-demo", component=["diffusion"]
        ),
    )
    api(
        c,
        "ModelStore().import_path(<folder with nested-deep card.json>)",
        lambda ctx: store(ctx).import_path(ctx.d / "model"),
        setup=lambda ctx: model_folder(ctx, raw=deep_json()),
    )
    api(c, "ModelStore().locate(None)", lambda ctx: store(ctx).locate(None))
    api(c, "ModelStore().locate(5)", lambda ctx: store(ctx).locate(5))
    api(c, "ModelStore().card(['x'])", lambda ctx: store(ctx).card(["x"]))
    api(c, "ModelStore().verify('no-such-model')", lambda ctx: store(ctx).verify("no-such-model"))
    # ---- read_volume / write_volume / save ---------------------------------------------------------------
    for desc, arg in [
        ("123", 123),
        ("None", None),
        ("b'/tmp/x.nii.gz'", b"/tmp/x.nii.gz"),
        ("''", ""),
        ("'<missing, name with newline>.nii.gz'", "miss\ning.nii.gz"),
        ("'/dev/null.nii.gz'", "/dev/null.nii.gz"),
        ("Path('/dev/zero')", Path("/dev/zero")),
    ]:
        api(c, f"read_volume({desc})", lambda ctx, arg=arg: SynthBrainLib.read_volume(arg))
    api(
        c,
        "read_volume(<header bomb .nii 32767^3 float64>)",
        lambda ctx: SynthBrainLib.read_volume(ctx.d / "bomb.nii"),
        setup=lambda ctx: nifti_header_bomb(ctx.d / "bomb.nii", (32767,) * 3, np.float64),
    )
    api(
        c,
        "read_volume(<truncated .nii.gz>)",
        lambda ctx: SynthBrainLib.read_volume(ctx.d / "t.nii.gz"),
        setup=lambda ctx: (save_nii(ctx.d / "t.nii.gz", base), truncate(ctx.d / "t.nii.gz", 0.4)),
    )
    api(
        c,
        "read_volume(<valid label map>)",
        lambda ctx: SynthBrainLib.read_volume(ctx.d / "ok.nii.gz"),
        expect="good",
        setup=lambda ctx: save_nii(ctx.d / "ok.nii.gz", base),
    )
    prov = {"model": {"id": "x"}, "seed": 1}
    wv = SynthBrainLib.write_volume
    for desc, call in [
        ("array='x'", lambda ctx: wv(ctx.d / "w.nii.gz", "x", np.eye(4), prov)),
        ("array=None", lambda ctx: wv(ctx.d / "w.nii.gz", None, np.eye(4), prov)),
        ("array of strings", lambda ctx: wv(ctx.d / "w.nii.gz", np.full((4, 4, 4), "a"), np.eye(4), prov)),
        ("affine='eye'", lambda ctx: wv(ctx.d / "w.nii.gz", np.zeros((4, 4, 4)), "eye", prov)),
        ("affine=np.eye(3)", lambda ctx: wv(ctx.d / "w.nii.gz", np.zeros((4, 4, 4)), np.eye(3), prov)),
        ("provenance='x'", lambda ctx: wv(ctx.d / "w.nii.gz", np.zeros((4, 4, 4)), np.eye(4), "x")),
        (
            "provenance with a non-JSON value",
            lambda ctx: wv(ctx.d / "w.nii.gz", np.zeros((4, 4, 4)), np.eye(4), {"model": {"id": "x"}, "x": object()}),
        ),
        ("path=5", lambda ctx: wv(5, np.zeros((4, 4, 4)), np.eye(4), prov)),
        ("path='w.png'", lambda ctx: wv(ctx.d / "w.png", np.zeros((4, 4, 4)), np.eye(4), prov)),
        (
            "path with a NUL character",
            lambda ctx: wv(str(ctx.d / "w\x00.nii.gz"), np.zeros((4, 4, 4)), np.eye(4), prov),
        ),
        (
            "path <existing file> without overwrite",
            lambda ctx: wv(ctx.d / "exists.nii.gz", np.zeros((4, 4, 4)), np.eye(4), prov),
        ),
        ("2D array", lambda ctx: wv(ctx.d / "w.nii.gz", np.zeros((4, 4)), np.eye(4), prov)),
        ("6D array", lambda ctx: wv(ctx.d / "w.nii.gz", np.zeros((2,) * 6), np.eye(4), prov)),
    ]:
        api(c, f"write_volume({desc})", call, setup=lambda ctx: (ctx.d / "exists.nii.gz").write_bytes(b"precious"))
    api(
        c,
        "write_volume(NaN image) (a plain float writer)",
        lambda ctx: wv(ctx.d / "w.nii.gz", np.full((4, 4, 4), np.nan), np.eye(4), prov),
        expect="either",
    )

    def result():
        return pipe("label2image-demo").generate(base, affine=DEMO_AFFINE, seed=2)

    for desc, arg in [
        ("5", 5),
        ("None", None),
        ("'x.png'", "x.png"),
        ("'<name with NUL>.nii.gz'", "x\x00.nii.gz"),
        ("''", ""),
        ("b'x.nii.gz'", b"x.nii.gz"),
    ]:
        api(
            c,
            f"SynthesisResult.save({desc})",
            lambda ctx, arg=arg: result().save(arg if not isinstance(arg, str) or not arg else str(ctx.d / arg)),
        )
    api(
        c,
        "SynthesisResult.save(<existing>, overwrite='no')",
        lambda ctx: result().save(ctx.d / "exists.nii.gz", overwrite="no"),
        setup=lambda ctx: (ctx.d / "exists.nii.gz").write_bytes(b"precious"),
    )
    api(
        c,
        "SynthesisResult.save(<labels result>, partial_volumes=5)",
        lambda ctx: (
            pipe("labels-demo").generate(seed=3, preview=True, steps=2).save(ctx.d / "l.nii.gz", partial_volumes=5)
        ),
    )
    # ---- cards ------------------------------------------------------------------------------------------
    from SynthBrainLib.models.cards import ModelCard

    api(c, "ModelCard.from_dict(5)", lambda ctx: ModelCard.from_dict(5))
    api(c, "ModelCard.from_dict({'id': ['x']})", lambda ctx: ModelCard.from_dict({"id": ["x"]}))
    api(
        c,
        "load_card(<nested 200000 deep>)",
        lambda ctx: SynthBrainLib.load_card(ctx.d / "card.json"),
        setup=lambda ctx: (ctx.d / "card.json").write_text(deep_json()),
    )
    api(
        c,
        "load_card(<not UTF-8>)",
        lambda ctx: SynthBrainLib.load_card(ctx.d / "card.json"),
        setup=lambda ctx: (ctx.d / "card.json").write_bytes(b'{"id": "\xff"}'),
    )
    api(c, "load_card(<a directory>)", lambda ctx: SynthBrainLib.load_card(ctx.d))
    api(c, "load_card(None)", lambda ctx: SynthBrainLib.load_card(None))
    api(
        c,
        "checkpoints.read_state_dict(<pickle payload, legacy format>)",
        lambda ctx: __import__("SynthBrainLib.models.checkpoints").models.checkpoints.read_state_dict(
            ctx.d / "evil.pt"
        ),
        setup=lambda ctx: write_payload(ctx.d / "evil.pt", "legacy", marker("api-read-state-dict")),
    )
