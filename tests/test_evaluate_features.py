"""Feature extractors: the in-domain CNN learns the classes and is reproducible; saved
extractors round-trip; external weights load strictly from local files under the known
wrappers and layouts, and give the reference network's own features; bad files fail clearly."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import DenseNet121, ResNet
from monai.networks.nets.resnet import get_inplanes
from torch import nn

from magicflow.errors import InputError
from magicflow.evaluate.features import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RADIMAGENET_MEAN,
    FeatureExtractor,
    extractor_from_config,
    load_external,
    train_in_domain,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 182


def discs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: a dim disc, class 1: a bright one; random centre, radius and noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(SIZE).float(), torch.arange(SIZE).float(), indexing="ij")
    labels = torch.arange(n) % 2
    images = []
    for k in labels.tolist():
        cy, cx = (SIZE / 2 + 20 * (torch.rand(2, generator=g) - 0.5)).tolist()
        radius = 40 + 20 * float(torch.rand(1, generator=g))
        disc = (((yy - cy) ** 2 + (xx - cx) ** 2).sqrt() < radius).float() * (0.35 if k == 0 else 0.65)
        images.append((disc + 0.1 * torch.randn(SIZE, SIZE, generator=g)).clamp(0, 1))
    return torch.stack(images)[:, None], labels


@pytest.fixture(scope="module")
def toy() -> dict:
    """One trained extractor shared by the in-domain tests (training is the slow part)."""
    with torch.random.fork_rng(devices=[]):
        torch.set_num_threads(1)
        images, labels = discs(24, seed=0)
        state = torch.random.get_rng_state()
        extractor = train_in_domain(images, labels, num_classes=2, epochs=5, seed=0, progress=False, min_steps=0)
        rng_untouched = torch.equal(state, torch.random.get_rng_state())
    return {"images": images, "labels": labels, "extractor": extractor, "rng_untouched": rng_untouched}


def nearest_centroid_accuracy(train: np.ndarray, train_y: np.ndarray, test: np.ndarray, test_y: np.ndarray) -> float:
    centroids = np.stack([train[train_y == k].mean(0) for k in (0, 1)])
    predicted = ((test[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    return float((predicted == test_y).mean())


# --------------------------------------------------------------------------- in-domain


def test_in_domain_features_separate_unseen_images_of_the_two_classes(toy: dict):
    extractor = toy["extractor"]
    held_out, held_labels = discs(24, seed=1)
    train_feats = extractor.features(toy["images"])
    test_feats = extractor.features(held_out)
    assert test_feats.shape == (24, extractor.feature_dim) == (24, 128)
    assert test_feats.dtype == np.float64 and np.isfinite(test_feats).all()
    assert extractor.info["training"]["train_accuracy"] > 0.9
    assert nearest_centroid_accuracy(train_feats, toy["labels"].numpy(), test_feats, held_labels.numpy()) > 0.9
    assert extractor.kind == "in_domain" and extractor.metric_suffix == "ID"
    assert toy["rng_untouched"], "training must not consume the caller's global RNG"


def test_in_domain_takes_at_least_min_steps_and_reports_heldout_accuracy():
    """24 training discs at batch 8: 3 steps per epoch, so 30 steps need 10 epochs where 2 were
    asked. Held-out accuracy on 16 unseen discs is recorded beside chance (0.5)."""
    images, labels = discs(24, seed=0)
    unseen, unseen_labels = discs(16, seed=5)
    small = dict(feature_dim=16, input_size=32, batch_size=8)
    with torch.random.fork_rng(devices=[]):
        torch.set_num_threads(1)
        extractor = train_in_domain(
            images, labels, 2, epochs=2, progress=False, min_steps=30, val_images=unseen, val_labels=unseen_labels, **small
        )
        few = train_in_domain(images, labels, 2, epochs=2, progress=False, min_steps=0, **small)
    training = extractor.info["training"]
    assert (training["epochs"], training["steps"], training["heldout_images"]) == (10, 30, 16)
    assert (few.info["training"]["epochs"], few.info["training"]["steps"]) == (2, 6)
    assert training["chance_balanced_accuracy"] == 0.5
    assert training["heldout_balanced_accuracy"] >= 0.9  # the discs differ in brightness: an easy task
    assert few.info["training"]["heldout_accuracy"] is None and "no held-out" in few.info["training"]["heldout_note"]


def test_in_domain_same_seed_same_weights_other_seed_other_weights(toy: dict):
    images, labels = toy["images"], toy["labels"]
    again = train_in_domain(images, labels, num_classes=2, epochs=5, seed=0, progress=False, min_steps=0)
    assert again.checksum == toy["extractor"].checksum
    np.testing.assert_array_equal(again.features(images), toy["extractor"].features(images))
    other = train_in_domain(images, labels, num_classes=2, epochs=5, seed=1, progress=False, min_steps=0)
    assert other.checksum != again.checksum


def test_features_are_deterministic_and_independent_of_batching_and_input_type(toy: dict):
    extractor, images = toy["extractor"], toy["images"][:10]
    first = extractor.features(images, batch=64)
    np.testing.assert_array_equal(first, extractor.features(images, batch=64))
    np.testing.assert_allclose(first, extractor.features(images, batch=3), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(first, extractor.features(images.numpy(), batch=64))
    np.testing.assert_array_equal(first, extractor.features(images[:, 0], batch=64))  # (N, H, W)
    assert extractor.features(images[:0]).shape == (0, 128)
    assert not extractor.module.training


def test_features_reject_colour_or_non_finite_images(toy: dict):
    extractor = toy["extractor"]
    with pytest.raises(InputError, match="grey images"):
        extractor.features(torch.rand(2, 3, 32, 32))
    bad = torch.rand(2, 1, 32, 32)
    bad[1, 0, 3, 3] = float("nan")
    with pytest.raises(InputError, match="non-finite"):
        extractor.features(bad)


def test_save_load_round_trip_and_tamper_detection(toy: dict, tmp_path: Path):
    extractor, images = toy["extractor"], toy["images"][:6]
    path = tmp_path / "features.pt"
    extractor.save(path)
    loaded = FeatureExtractor.load(path)
    assert loaded.checksum == extractor.checksum
    assert (loaded.kind, loaded.name, loaded.feature_dim) == (extractor.kind, extractor.name, 128)
    assert loaded.info == extractor.info
    np.testing.assert_array_equal(loaded.features(images), extractor.features(images))

    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["backbone.conv1.weight"] += 1e-3
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(InputError, match="checksum"):
        FeatureExtractor.load(tmp_path / "edited.pt")
    with pytest.raises(InputError, match="not found"):
        FeatureExtractor.load(tmp_path / "absent.pt")


def test_in_domain_rejects_labels_that_do_not_fit():
    images, labels = discs(4, seed=0)
    with pytest.raises(InputError, match="labels in"):
        train_in_domain(images, torch.tensor([0, 1, 2, 0]), num_classes=2, progress=False)
    with pytest.raises(InputError, match="one label per image"):
        train_in_domain(images, labels[:3], num_classes=2, progress=False)
    with pytest.raises(InputError, match="at least 2 classes"):
        train_in_domain(images, labels * 0, num_classes=1, progress=False)


def test_config_builds_in_domain_and_checks_settings(tmp_path: Path):
    images, labels = discs(8, seed=2)
    small = images[:, :, ::4, ::4]  # 46x46: the extractor resizes to its own input size
    extractor = extractor_from_config(
        {"kind": "in_domain", "epochs": 1, "feature_dim": 64}, small, labels, 2, seed=3, progress=False, min_steps=3
    )
    # 8 images at batch 32: one step per epoch, so 3 steps take 3 epochs whatever "epochs" says
    assert extractor.feature_dim == 64 and extractor.info["training"]["epochs"] == 3
    assert extractor.info["training"]["steps"] == 3 and extractor.info["training"]["heldout_accuracy"] is None
    assert extractor.info["training"]["seed"] == 3
    with pytest.raises(InputError, match="does not take"):
        extractor_from_config({"kind": "in_domain", "epoch": 1}, small, labels, 2, seed=0)
    with pytest.raises(InputError, match="needs 'weights'"):
        extractor_from_config({"kind": "swav_resnet50"}, small, labels, 2, seed=0)
    with pytest.raises(InputError, match="unknown feature extractor kind"):
        extractor_from_config({"kind": "vgg16"}, small, labels, 2, seed=0)
    with pytest.raises(InputError, match="not found"):
        extractor_from_config({"kind": "swav_resnet50", "weights": str(tmp_path / "swav.pth")}, small, labels, 2, seed=0)


# --------------------------------------------------------------------------- external


def randomise_batchnorm(net: nn.Module, seed: int) -> nn.Module:
    """Fresh BatchNorm is the identity in eval mode; random statistics make the test bite."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=g))
    return net.eval()


def torchvision_resnet50(seed: int) -> nn.Module:
    """MONAI's ResNet-50 in torchvision's layout: 7x7/2 stem, bias-free downsample."""
    torch.manual_seed(seed)
    net = ResNet(
        "bottleneck",
        [3, 4, 6, 3],
        get_inplanes(),
        spatial_dims=2,
        n_input_channels=3,
        conv1_t_size=7,
        conv1_t_stride=2,
        bias_downsample=False,
        feed_forward=False,
    )
    return randomise_batchnorm(net, seed)


class KerasBottleneck(nn.Module):
    """Keras ResNet50 block as RadImageNet's PyTorch conversion has it: conv biases, stride on the first 1x1."""

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, stride=stride), nn.BatchNorm2d(planes, eps=1.001e-5)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, padding=1), nn.BatchNorm2d(planes, eps=1.001e-5)
        self.conv3, self.bn3 = nn.Conv2d(planes, 4 * planes, 1), nn.BatchNorm2d(4 * planes, eps=1.001e-5)
        self.downsample = None
        if stride != 1 or cin != 4 * planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, 4 * planes, 1, stride=stride), nn.BatchNorm2d(4 * planes, eps=1.001e-5)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class KerasResNet50(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, stride=2, padding=3), nn.BatchNorm2d(64, eps=1.001e-5)
        cin, stages = 64, []
        for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            stage = []
            for i in range(blocks):
                stage.append(KerasBottleneck(cin, planes, stride if i == 0 else 1))
                cin = 4 * planes
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean((2, 3))


def network_input(images: torch.Tensor, mean: tuple, std: tuple, size: int = 224) -> torch.Tensor:
    """The documented preprocessing: bilinear resize, grey to 3 channels, per-channel scaling."""
    x = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def two_slices() -> torch.Tensor:
    return discs(2, seed=5)[0]


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A random torchvision-layout ResNet-50 saved DataParallel-style under 'state_dict',
    with an ImageNet fc that the loader must drop."""
    with torch.random.fork_rng(devices=[]):
        net = torchvision_resnet50(seed=0)
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    state["module.fc.weight"], state["module.fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save({"state_dict": state, "epoch": 3}, path)
    return {"net": net, "path": path, "state": net.state_dict()}


def test_radimagenet_resnet50_gives_the_original_networks_features(resnet_file: dict, two_slices: torch.Tensor):
    extractor = load_external("radimagenet_resnet50", resnet_file["path"])
    assert (extractor.feature_dim, extractor.metric_suffix, extractor.info["layout"]) == (2048, "Rad", "torchvision")
    with torch.no_grad():
        expected = resnet_file["net"](network_input(two_slices, RADIMAGENET_MEAN, (1.0, 1.0, 1.0))).double().numpy()
    got = extractor.features(two_slices)
    assert got.shape == (2, 2048) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_swav_checkpoint_with_heads_and_sequential_layout_load_the_same_weights(
    resnet_file: dict, tmp_path: Path, two_slices: torch.Tensor
):
    swav = {f"module.{k}": v for k, v in resnet_file["state"].items()}
    swav["module.projection_head.0.weight"] = torch.zeros(2048, 2048)
    swav["module.prototypes.weight"] = torch.zeros(3000, 128)
    torch.save(swav, tmp_path / "swav_800ep_pretrain.pth.tar")
    swav_extractor = load_external("swav_resnet50", tmp_path / "swav_800ep_pretrain.pth.tar")
    assert swav_extractor.metric_suffix == "SwAV"
    with torch.no_grad():
        expected = resnet_file["net"](network_input(two_slices, IMAGENET_MEAN, IMAGENET_STD)).double().numpy()
    np.testing.assert_allclose(swav_extractor.features(two_slices), expected, rtol=1e-4, atol=1e-5)

    index = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}
    sequential = {index[k.split(".")[0]] + k[k.index(".") :]: v for k, v in resnet_file["state"].items()}
    torch.save({"model": sequential}, tmp_path / "ResNet50.pt")
    rad = load_external("radimagenet_resnet50", tmp_path / "ResNet50.pt")
    assert rad.checksum == swav_extractor.checksum == load_external("radimagenet_resnet50", resnet_file["path"]).checksum


@pytest.mark.slow
def test_keras_layout_radimagenet_resnet50_matches_a_keras_style_network(tmp_path: Path, two_slices: torch.Tensor):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        net = randomise_batchnorm(KerasResNet50(), seed=1)
    torch.save(net.state_dict(), tmp_path / "RadImageNet-ResNet50_notop.pth")
    extractor = load_external("radimagenet_resnet50", tmp_path / "RadImageNet-ResNet50_notop.pth")
    assert extractor.info["layout"] == "keras"
    with torch.no_grad():
        expected = net(network_input(two_slices, RADIMAGENET_MEAN, (1.0, 1.0, 1.0))).double().numpy()
    np.testing.assert_allclose(extractor.features(two_slices), expected, rtol=1e-4, atol=1e-5)
    extractor.save(tmp_path / "keras.pt")
    assert FeatureExtractor.load(tmp_path / "keras.pt").checksum == extractor.checksum


def test_densenet121_from_torchvision_names_gives_the_original_features(tmp_path: Path, two_slices: torch.Tensor):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        net = DenseNet121(spatial_dims=2, in_channels=3, out_channels=1000)
    net.class_layers.out = nn.Identity()
    randomise_batchnorm(net, seed=2)
    torchvision_names = {f"module.{k.replace('.layers.', '.')}": v for k, v in net.state_dict().items()}
    torchvision_names["module.classifier.weight"] = torch.zeros(1000, 1024)
    torchvision_names["module.classifier.bias"] = torch.zeros(1000)
    torch.save(torchvision_names, tmp_path / "densenet121.pt")
    extractor = load_external("radimagenet_densenet121", tmp_path / "densenet121.pt")
    assert extractor.feature_dim == 1024
    with torch.no_grad():
        expected = net(network_input(two_slices, RADIMAGENET_MEAN, (1.0, 1.0, 1.0))).double().numpy()
    np.testing.assert_allclose(extractor.features(two_slices), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_weights_that_do_not_fit_name_the_file_kind_and_keys(resnet_file: dict, tmp_path: Path):
    state = dict(resnet_file["state"])
    del state["layer3.2.bn2.running_var"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(InputError, match=r"missing\.pt.*radimagenet_resnet50.*layer3\.2\.bn2\.running_var"):
        load_external("radimagenet_resnet50", tmp_path / "missing.pt")

    state = dict(resnet_file["state"])
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pt")
    with pytest.raises(InputError, match=r"extra\.pt.*unexpected keys \['layer5\.0\.conv1\.weight'\]"):
        load_external("swav_resnet50", tmp_path / "extra.pt")

    state = dict(resnet_file["state"])
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 3, 3)
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(InputError, match=r"shape\.pt.*layer1\.0\.conv1\.weight"):
        load_external("radimagenet_resnet50", tmp_path / "shape.pt")

    with pytest.raises(InputError, match=r"missing keys"):  # a ResNet file offered as a DenseNet
        load_external("radimagenet_densenet121", resnet_file["path"])


def test_absent_unreadable_or_unknown_weights_are_input_errors(tmp_path: Path):
    with pytest.raises(InputError, match=r"swav_resnet50 weights not found: .*nowhere\.pth.*never downloaded"):
        load_external("swav_resnet50", tmp_path / "nowhere.pth")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match=r"junk\.pt is not a readable radimagenet_resnet50"):
        load_external("radimagenet_resnet50", tmp_path / "junk.pt")
    torch.save({"epoch": 3, "arch": "resnet50"}, tmp_path / "nostate.pt")
    with pytest.raises(InputError, match="holds no"):
        load_external("radimagenet_resnet50", tmp_path / "nostate.pt")
    with pytest.raises(InputError, match="unknown external feature extractor kind 'resnet50'"):
        load_external("resnet50", tmp_path / "junk.pt")


# --------------------------------------------------------------------------- Inception via torch-fidelity


def test_inception_kinds_say_which_package_they_need(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", None)
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1)}, tmp_path / "pt_inception.pth")
    for kind in ("inception_fid", "radimagenet_inceptionv3"):
        with pytest.raises(InputError, match=f"{kind}.*torch-fidelity"):
            load_external(kind, tmp_path / "pt_inception.pth")


class StubInception(nn.Module):
    """torch-fidelity's constructor contract: takes a weights path, loads it strictly,
    forward takes uint8 RGB and returns a tuple of the requested features."""

    def __init__(self, name: str, features_list: list[str], feature_extractor_weights_path: str | None = None) -> None:
        super().__init__()
        assert feature_extractor_weights_path is not None, "must never download"
        self.Conv2d_1a_3x3 = nn.Conv2d(3, 2048, 1, bias=False)
        self.fc = nn.Linear(2048, 1008)
        self.load_state_dict(torch.load(feature_extractor_weights_path, weights_only=True))
        self.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        assert x.dtype == torch.uint8 and x.shape[1] == 3
        x = F.interpolate(x.float(), size=(32, 32), mode="bilinear", align_corners=False)  # 299 in the real one
        return (self.Conv2d_1a_3x3((x - 128) / 128).mean((2, 3)),)


def test_inception_kinds_feed_torch_fidelity_uint8_and_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, two_slices: torch.Tensor
):
    stub = types.ModuleType("torch_fidelity.feature_extractor_inceptionv3")
    stub.FeatureExtractorInceptionV3 = StubInception
    monkeypatch.setitem(sys.modules, "torch_fidelity", types.ModuleType("torch_fidelity"))
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", stub)
    weight = torch.randn(2048, 3, 1, 1, generator=torch.Generator().manual_seed(0))
    torch.save({"module.Conv2d_1a_3x3.weight": weight}, tmp_path / "radimagenet_inception_notop.pt")
    extractor = load_external("radimagenet_inceptionv3", tmp_path / "radimagenet_inception_notop.pt")
    assert (extractor.feature_dim, extractor.metric_suffix) == (2048, "Rad")
    pixels = (two_slices * 255).round().repeat(1, 3, 1, 1)
    pixels = F.interpolate(pixels, size=(32, 32), mode="bilinear", align_corners=False)
    expected = F.conv2d((pixels - 128) / 128, weight).mean((2, 3)).double().numpy()
    np.testing.assert_allclose(extractor.features(two_slices), expected, rtol=1e-4, atol=1e-5)

    extractor.save(tmp_path / "inception.pt")
    loaded = FeatureExtractor.load(tmp_path / "inception.pt")
    assert loaded.checksum == extractor.checksum and loaded.kind == "radimagenet_inceptionv3"

    torch.save({"Mixed_5b.weight": weight}, tmp_path / "wrong.pt")
    with pytest.raises(InputError, match=r"wrong\.pt.*inception_fid.*Mixed_5b"):
        load_external("inception_fid", tmp_path / "wrong.pt")
