"""Model cards: the published cards are exact, and malformed cards fail naming the field."""

from __future__ import annotations

import copy
import json

import pytest
from tiny_models import count_parameters, tiny_brain_card, tiny_spade_card

from SynthBrainLib.errors import CardError
from SynthBrainLib.models.cards import ModelCard, builtin_cards, load_card
from SynthBrainLib.models.networks import build_networks
from SynthBrainLib.pipelines import pipeline_class

# configs/inference.json of the MONAI model-zoo bundle brain_image_synthesis_latent_diffusion_model 1.0.0
BUNDLE_AUTOENCODER = {
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 1,
    "latent_channels": 3,
    "channels": [64, 128, 128, 128],
    "num_res_blocks": 2,
    "norm_num_groups": 32,
    "norm_eps": 1e-06,
    "attention_levels": [False, False, False, False],
    "with_encoder_nonlocal_attn": False,
    "with_decoder_nonlocal_attn": False,
}
BUNDLE_DIFFUSION = {
    "spatial_dims": 3,
    "in_channels": 7,
    "out_channels": 3,
    "channels": [256, 512, 768],
    "num_res_blocks": 2,
    "attention_levels": [False, True, True],
    "norm_num_groups": 32,
    "norm_eps": 1e-06,
    "resblock_updown": True,
    "num_head_channels": [0, 512, 768],
    "with_conditioning": True,
    "transformer_num_layers": 1,
    "cross_attention_dim": 4,
    "upcast_attention": True,
    "use_flash_attention": False,
}
BUNDLE_SCHEDULER = {
    "beta_start": 0.0015,
    "beta_end": 0.0205,
    "num_train_timesteps": 1000,
    "schedule": "scaled_linear_beta",
    "clip_sample": False,
}


def test_builtin_cards_load():
    cards = builtin_cards()
    assert {"brain-ldm", "brainspade3d-labels", "brainspade3d-image"} <= set(cards)
    schema = tuple("background csf gm wm dgm brainstem wmh tumour edema gdtumour".split())
    assert cards["brainspade3d-labels"].label_names == schema, "brainSPADE3D's ten classes, in channel order"
    assert cards["brainspade3d-labels"].conditioning.names == ("wmh", "tumour", "edema", "gdtumour")
    assert cards["brainspade3d-image"].sequences.names == ("T1", "FLAIR", "T2")


def test_brain_ldm_card_reproduces_the_bundle():
    card = builtin_cards()["brain-ldm"]
    ae, unet = card.networks["autoencoder"], card.networks["diffusion"]
    assert ae.cls == "AutoencoderKL", f"autoencoder class: {ae.cls}"
    assert dict(ae.kwargs) == BUNDLE_AUTOENCODER, "autoencoder arguments are the bundle's"
    assert unet.cls == "DiffusionModelUNet", f"diffusion class: {unet.cls}"
    assert dict(unet.kwargs) == BUNDLE_DIFFUSION, "diffusion UNet arguments are the bundle's"
    assert card.scheduler.cls == "DDIMScheduler", f"scheduler class: {card.scheduler.cls}"
    assert dict(card.scheduler.kwargs) == BUNDLE_SCHEDULER, "scheduler arguments are the bundle's"
    assert (card.sampling.default_sampler, card.sampling.default_steps) == ("ddim", 50), "default sampling is DDIM 50"
    assert card.latent.shape == (3, 20, 28, 20), f"latent shape: {card.latent.shape}"
    assert card.latent.scale_factor == 1.0, f"latent scale factor: {card.latent.scale_factor}"
    assert card.conditioning.names == ("sex", "age", "ventricular_volume", "brain_volume")
    assert card.conditioning.inputs == ("concat", "crossattn")
    assert card.output.shape == (160, 224, 160), f"output shape: {card.output.shape}"
    assert card.output.spacing == (1.0, 1.0, 1.0), f"output spacing: {card.output.spacing}"
    assert card.weights["autoencoder"].md5 == "329e97b3085643ff235f11f049856242"
    assert card.weights["diffusion"].md5 == "21c3047556fb671caf0556f1cce6ef22"
    # bundle defaults 0.0, 0.1, 0.2, 0.4 are the card defaults in model units
    from SynthBrainLib.models.conditioning import resolve_conditions

    assert resolve_conditions(card.conditioning).vector() == pytest.approx([0.0, 0.1, 0.2, 0.4])


def test_brain_ldm_parameter_counts():
    """With monai 1.6.1: 13.77 M (autoencoder) and 553.17 M (diffusion UNet)."""
    nets = build_networks(builtin_cards()["brain-ldm"])
    assert round(count_parameters(nets["autoencoder"]) / 1e6, 2) == 13.77
    assert round(count_parameters(nets["diffusion"]) / 1e6, 2) == 553.17


def _broken(mutate) -> str:
    data = tiny_brain_card()
    mutate(data)
    with pytest.raises(CardError) as err:
        pipeline_class(ModelCard.from_dict(data))  # the reader's rules, then the kind's (its pipeline class)
    message = str(err.value)
    assert "\n" not in message, f"the error is one line: {message!r}"
    assert message.startswith("card "), f"the error starts with 'card ': {message!r}"
    return message


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d.pop("kind"), "field 'kind' is required"),
        (lambda d: d.update(kind="gan"), "field 'kind' must be one of"),
        (lambda d: d.update(schema_version=7), "field 'schema_version' must be 1"),
        (lambda d: d.update(id="Brain LDM"), "field 'id' must be lower-case"),
        (
            lambda d: d["networks"]["diffusion"].update({"class": "os.system"}),
            "field 'networks.diffusion.class' must be one of",
        ),
        (
            lambda d: d["networks"]["diffusion"]["kwargs"].update(hidden=3),
            "field 'networks.diffusion.kwargs.hidden' is not an argument of monai.networks.nets.DiffusionModelUNet",
        ),
        (
            lambda d: d["networks"]["autoencoder"]["kwargs"].pop("spatial_dims"),
            "field 'networks.autoencoder.kwargs.spatial_dims' is required",
        ),
        (
            lambda d: d["networks"]["diffusion"].update(weights="nope"),
            "field 'networks.diffusion.weights' names 'nope', which is not in 'weights'",
        ),
        (
            lambda d: d["weights"]["diffusion"].update(sha256="abc"),
            "field 'weights.diffusion.sha256' must be 64 lower-case hex digits",
        ),
        (
            lambda d: d["weights"]["diffusion"].update(file="../etc/passwd"),
            "field 'weights.diffusion.file' must be a plain file name",
        ),
        (
            lambda d: d["weights"]["diffusion"].update(url="ftp://x"),
            "field 'weights.diffusion.url' must be an http(s) URL",
        ),
        (
            lambda d: d["scheduler"]["kwargs"].update(beta_end=0.001),
            "field 'scheduler.kwargs.beta_end' must be above beta_start",
        ),
        (lambda d: d["sampling"].update(default_sampler="euler"), "field 'sampling.default_sampler' must be one of"),
        (
            lambda d: d["sampling"].update(samplers=["rflow"]),
            "field 'sampling.samplers' must be a non-empty list from ddpm, ddim, pndm",
        ),
        (lambda d: d["latent"].update(shape=[3, 8, 8]), "field 'latent.shape' must be a list of 4 positive integers"),
        (lambda d: d["output"].update(spacing=[1, 1]), "field 'output.spacing' must be a list of 3 positive numbers"),
        (lambda d: d["output"].update(affine=[[1, 0, 0, 0]]), "field 'output.affine' must be a 4x4 matrix"),
        (lambda d: d["output"].update(spacing=[3.0, 3.0, 3.0]), "field 'output.affine' column norms"),
        (
            lambda d: d["conditioning"]["variables"][1].update(range=[82, 45]),
            "field 'conditioning.variables[1].range' must be increasing",
        ),
        (
            lambda d: d["conditioning"]["variables"][1].update(default=100),
            "field 'conditioning.variables[1].default' must lie in range 44–82",
        ),
        (
            lambda d: d["conditioning"]["variables"][1].update(unit=""),
            "field 'conditioning.variables[1].unit' must be a non-empty string",
        ),
        (
            lambda d: d["conditioning"]["variables"][0]["choices"].update(male=2.0),
            "field 'conditioning.variables[0].choices.male' must lie in model_range 0–1",
        ),
        (
            lambda d: d["conditioning"]["variables"].pop(),
            "field 'networks.diffusion.kwargs.in_channels' must be latent channels 3 + 3",
        ),
        (
            lambda d: d["conditioning"].update(inputs=["film"]),
            "field 'conditioning.inputs' must be a list from concat, crossattn",
        ),
        (
            lambda d: d.update(
                labels=[{"value": 1, "name": "x", "color": [0, 0, 0]}, {"value": 2, "name": "y", "color": [0, 0, 0]}]
            ),
            "field 'labels[0].value' must equal the channel index 0",
        ),
    ],
)
def test_malformed_card_names_the_field(mutate, expected):
    message = _broken(mutate)
    assert expected in message, message


def test_spade_label_nc_must_match_the_label_channels():
    data = tiny_spade_card()
    data["sequences"]["label_channels"] = True
    with pytest.raises(
        CardError, match=r"field 'networks.generator.kwargs.label_nc' must be \d+ \(label classes \+ sequences"
    ):
        pipeline_class(ModelCard.from_dict(data))
    data["networks"]["generator"]["kwargs"]["label_nc"] += len(data["sequences"]["names"])
    assert ModelCard.from_dict(data).sequences.label_channels
    data["sequences"]["label_channels"] = "yes"
    with pytest.raises(CardError, match="field 'sequences.label_channels' must be true or false"):
        ModelCard.from_dict(data)


def test_card_file_errors(tmp_path):
    bad_json = tmp_path / "card.json"
    bad_json.write_text("{ not json")
    with pytest.raises(CardError, match="is not valid JSON"):
        load_card(bad_json)
    with pytest.raises(CardError, match="cannot read card"):
        load_card(tmp_path / "missing.json")
    not_object = tmp_path / "list.json"
    not_object.write_text("[1, 2]")
    with pytest.raises(CardError, match="must be an object"):
        load_card(not_object)


def test_card_round_trip(tmp_path):
    data = tiny_brain_card()
    path = tmp_path / "card.json"
    path.write_text(json.dumps(data))
    card = load_card(path)
    assert card.to_dict() == json.loads(json.dumps(data))
    assert card.conditioning.variable("ventricular_volume").option == "--ventricular-volume"
    copy.deepcopy(card)  # cards are plain data
