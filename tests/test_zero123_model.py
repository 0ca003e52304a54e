"""The Zero-1-to-3 model module: layout, CCProjection, the camera encoding, conditioning, framing."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from safetensors.torch import save_file

from dream3d.diffusion.framing import frame_object, object_box, on_background
from dream3d.diffusion.loading import resolve_model
from dream3d.diffusion.zero123 import (
    CCProjection,
    ViewDiffusion,
    build_view_model,
    encode_relative_camera,
    relative_camera,
    save_view_model,
)
from dream3d.errors import ModelLoadError, UserError


@pytest.fixture(scope="module")
def tiny_view(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "tiny-view"
    components = build_view_model(seed=0)
    save_view_model(components, folder, variant="stable-zero123", object_fraction=0.6)
    return folder, components


def test_saved_model_has_the_public_layout_and_loads_back_equal(tiny_view):
    folder, components = tiny_view
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "Zero1to3StableDiffusionPipeline"
    assert index["image_encoder"] == ["transformers", "CLIPVisionModelWithProjection"]
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert json.loads((folder / "view.json").read_text()) == {
        "variant": "stable-zero123",
        "object_fraction": 0.6,
        "image_size": 32,
    }
    core = ViewDiffusion.from_pretrained(folder, device="cpu")
    assert core.unet.config.in_channels == 8 and core.variant == "stable-zero123" and core.object_fraction == 0.6
    for name in ("vae", "image_encoder", "cc_projection", "unet"):
        a, b = components[name].state_dict(), getattr(core, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    g = torch.Generator().manual_seed(0)
    images, camera = torch.rand(2, 3, 32, 32, generator=g), torch.randn(2, 4, generator=g)
    noisy = torch.randn(2, 4, 16, 16, generator=g)
    cond = core.image_conditioning(images, camera)
    eps = core.predict_noise(noisy, 500, cond, guidance_scale=3.0)
    for module in components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    emb = components["image_encoder"](pixel_values=core.clip_pixels(images)).image_embeds
    proj = components["cc_projection"](torch.cat([emb[:, None], camera[:, None]], -1))
    lat = components["vae"].encode(images * 2 - 1).latent_dist.mode()
    out = components["unet"](
        torch.cat([noisy.repeat(2, 1, 1, 1), torch.cat([lat * 0, lat])], 1),
        500,
        encoder_hidden_states=torch.cat([proj * 0, proj]),
    ).sample
    v = out[:2] + 3.0 * (out[2:] - out[:2])
    abar = core.alphas_cumprod[500]
    assert torch.allclose(eps, abar.sqrt() * v + (1 - abar).sqrt() * noisy, atol=1e-5)


def test_ccprojection_loads_a_public_style_folder(tmp_path):
    folder = tmp_path / "cc_projection"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"_class_name": "CCProjection", "in_channel": 36, "out_channel": 32})
    )
    weights = {"projection.weight": torch.randn(32, 36), "projection.bias": torch.randn(32)}
    save_file(weights, str(folder / "diffusion_pytorch_model.safetensors"))
    cc = CCProjection.from_pretrained(tmp_path, subfolder="cc_projection")
    assert cc.config.in_channel == 36 and cc.config.out_channel == 32
    assert torch.equal(cc.projection.weight, weights["projection.weight"])
    x = torch.randn(3, 1, 36)
    assert torch.allclose(cc(x), x @ weights["projection.weight"].T + weights["projection.bias"])


def test_relative_camera_encoding_by_hand():
    # 30 degrees higher, 90 degrees counter-clockwise, 0.5 further: polar falls by 30 degrees
    row = encode_relative_camera(30.0, 90.0, 0.5)[0]
    assert torch.allclose(row, torch.tensor([-math.pi / 6, 1.0, 0.0, 0.5]), atol=1e-6)
    row = encode_relative_camera(-15.0, -180.0, 0.0)[0]
    assert torch.allclose(row, torch.tensor([math.pi / 12, 0.0, -1.0, 0.0]), atol=1e-6)
    # stable-zero123: the 4th number is the conditioning view's polar angle, deg2rad(90 - elevation)
    row = encode_relative_camera(10.0, 45.0, 0.3, cond_elevation_deg=30.0, variant="stable-zero123")[0]
    s = math.sqrt(0.5)
    assert torch.allclose(row, torch.tensor([-math.pi / 18, s, s, math.pi / 3]), atol=1e-6)
    # from absolute cameras: target minus conditioning view, broadcast over targets
    rows = relative_camera((20.0, 30.0, 1.8), ([20.0, 50.0], [120.0, 30.0], [1.8, 2.0]))
    assert torch.allclose(rows, torch.tensor([[0.0, 1.0, 0.0, 0.0], [-math.pi / 6, 0.0, 1.0, 0.2]]), atol=1e-6)
    with pytest.raises(UserError, match="elevation"):
        encode_relative_camera(0.0, 0.0, variant="stable-zero123")
    with pytest.raises(UserError, match="variant"):
        encode_relative_camera(0.0, 0.0, variant="zero999")


def test_image_conditioning_matches_a_plain_reimplementation(tiny_view):
    folder, _ = tiny_view
    core = ViewDiffusion.from_pretrained(folder, device="cpu")
    g = torch.Generator().manual_seed(1)
    images = torch.rand(3, 3, 64, 64, generator=g)  # resized to the CLIP and VAE sizes
    camera = encode_relative_camera([0.0, 10.0, -5.0], [30.0, 60.0, 90.0], 0.0)
    emb, lat = core.image_conditioning(images, camera)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).reshape(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).reshape(1, 3, 1, 1)
    pixels = (F.interpolate(images, size=(32, 32), mode="bicubic", antialias=True) - mean) / std
    embeds = core.image_encoder(pixel_values=pixels).image_embeds
    want = core.cc_projection.projection(torch.cat([embeds, camera], -1))[:, None]
    small = F.interpolate(images, size=(32, 32), mode="bilinear", antialias=True)
    posterior = core.vae.encode(small * 2 - 1).latent_dist
    assert torch.allclose(emb, want, atol=1e-5)
    assert torch.allclose(lat, posterior.mean, atol=1e-5)  # the mode, not scaled by scaling_factor
    u_emb, u_lat = core.unconditional((emb, lat))
    assert not u_emb.any() and not u_lat.any() and u_emb.shape == emb.shape
    one_image = core.image_conditioning(images[:1], camera)  # one image, three cameras
    assert one_image[0].shape == emb.shape and torch.allclose(one_image[0][0], emb[0], atol=1e-5)


def test_sample_is_seeded(tiny_view):
    core = ViewDiffusion.from_pretrained(tiny_view[0], device="cpu")
    image, camera = torch.rand(1, 3, 32, 32), encode_relative_camera(0.0, 90.0, 0.0)
    a = core.sample(image, camera, num_steps=3, generator=torch.Generator().manual_seed(0))
    b = core.sample(image, camera, num_steps=3, generator=torch.Generator().manual_seed(0))
    assert a.shape == (1, 3, 32, 32) and torch.equal(a, b) and 0 <= float(a.min()) <= float(a.max()) <= 1


def test_resolve_model_view_layout_errors(tiny_view, tiny_model, tmp_path):
    assert resolve_model(str(tiny_view[0]), layout="view") == tiny_view[0]
    with pytest.raises(ModelLoadError, match="not a Zero-1-to-3.*looks like a Stable Diffusion model"):
        resolve_model(str(tiny_model), layout="view")
    with pytest.raises(ModelLoadError, match="not a Stable Diffusion model"):
        resolve_model(str(tiny_view[0]))
    with pytest.raises(ModelLoadError, match="is a Zero-1-to-3"):
        resolve_model("shapes-view", layout="sd")
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE"):
        resolve_model("nobody/no-such-zero123", layout="view")
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model(str(tmp_path / "nothing"), layout="view")


def test_frame_object_centres_and_scales_the_box():
    rgba = torch.zeros(4, 64, 64)
    rgba[:3] = torch.tensor([0.8, 0.1, 0.1])[:, None, None]
    rgba[3, 4:20, 10:18] = 1.0  # a 16 x 8 box, off centre
    framed = frame_object(rgba, 0.5, size=32)
    assert framed.shape == (4, 32, 32)
    x0, y0, x1, y1 = object_box(framed[3])
    assert (x0, y0, x1, y1) == (12.0, 8.0, 20.0, 24.0)  # 16 px = 0.5 of 32, centred
    assert torch.allclose(framed[:3, 16, 16], torch.tensor([0.8, 0.1, 0.1]), atol=1e-5)
    white = on_background(framed)
    assert torch.allclose(white[:, 0, 0], torch.ones(3))
    batch = frame_object(torch.stack([rgba, rgba]), 0.5, size=32)
    assert torch.equal(batch[1], framed)
    with pytest.raises(UserError, match="no object"):
        frame_object(torch.zeros(4, 8, 8), 0.5)


def test_a_reused_vae_records_no_source_path(tiny_view, tmp_path):
    vae = AutoencoderKL.from_pretrained(tiny_view[0], subfolder="vae")  # as the view prior reuses the text prior's
    assert vae.config._name_or_path  # diffusers remembers where it came from ...
    folder = save_view_model(build_view_model(vae=vae, seed=0), tmp_path / "m")
    for path in folder.glob("*/config.json"):  # ... and the saved model must not carry that machine's path
        assert "_name_or_path" not in json.loads(path.read_text()), path
