import numpy as np
import pytest
import torch

from vfer import models
from vfer.models import WeightsError

# Parameter counts of torchvision's alexnet, vgg16, resnet18 and resnet50 (1000 classes).
TORCHVISION = {"alexnet": 61_100_840, "vgg16": 138_357_544, "resnet18": 11_689_512,
               "resnet50": 25_557_032}
KEYS = {  # a few layers per model, with torchvision's names and shapes
    "alexnet": {"features.0.weight": (64, 3, 11, 11), "features.10.weight": (256, 256, 3, 3),
                "classifier.1.weight": (4096, 9216), "classifier.4.weight": (4096, 4096),
                "classifier.6.weight": (1000, 4096)},
    "vgg16": {"features.0.weight": (64, 3, 3, 3), "features.28.weight": (512, 512, 3, 3),
              "classifier.0.weight": (4096, 25088), "classifier.3.weight": (4096, 4096)},
    "resnet18": {"conv1.weight": (64, 3, 7, 7), "layer2.0.downsample.0.weight": (128, 64, 1, 1),
                 "layer4.1.bn2.running_var": (512,), "fc.weight": (1000, 512)},
    "resnet50": {"layer1.0.downsample.0.weight": (256, 64, 1, 1),
                 "layer4.2.conv3.weight": (2048, 512, 1, 1), "fc.weight": (1000, 2048)},
}


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_backbones_have_torchvision_names_and_shapes(name):
    with torch.device("meta"):
        model = models.build(name, 1000)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION[name]
    state = model.state_dict()
    for key, shape in KEYS[name].items():
        assert tuple(state[key].shape) == shape, key


@pytest.mark.parametrize("name, size", [("alexnet", 227), ("vgg16", 224), ("resnet18", 224),
                                        ("resnet50", 224)])
def test_feature_layers_have_their_dimensions(name, size):
    with torch.device("meta"):
        model = models.build(name, 6)
        for layer, dim in models.SPECS[name].layers.items():
            assert tuple(model.features_of(torch.empty(2, 3, size, size), layer).shape) == (2, dim)
        assert tuple(model(torch.empty(2, 3, size, size)).shape) == (2, 6)


def test_c3d_takes_whole_segments():
    model = models.build("c3d", 6).eval()
    x = torch.randn(2, 3, 16, 64, 64)
    assert model.features_of(x, "fc").shape == (2, 18)
    assert model.features_of(x, "mspp").shape == (2, 64 * (4 + 16 + 64))
    assert model(x).shape == (2, 6)


def test_mspp_pools_each_frame_over_grids():
    x = torch.zeros(1, 1, 2, 8, 8)
    x[0, 0, 1, 0, 0] = 5.0  # top-left pixel of frame 1
    out = models.mspp(x, (2,))
    assert out.shape == (1, 2, 4)
    assert out[0, 0].tolist() == [0, 0, 0, 0] and out[0, 1].tolist() == [5, 0, 0, 0]


@pytest.mark.parametrize("name, shape", [("resnet18", (1, 3, 64, 64)), ("small_cnn", (1, 3, 128, 128)),
                                         ("c3d", (1, 3, 4, 64, 64))])
def test_weights_round_trip(tmp_path, name, shape):
    torch.manual_seed(0)
    source = models.build(name, 6).eval()
    path = tmp_path / f"{name}.pth"
    torch.save(source.state_dict(), path)
    torch.manual_seed(1)
    fresh = models.build(name, 6).eval()
    x = torch.randn(*shape)
    assert not torch.equal(fresh(x), source(x))
    info = models.load_weights(fresh, path, models.SPECS[name].head)
    assert info["head_loaded"] and len(info["sha256"]) == 64
    with torch.no_grad():
        assert torch.equal(fresh(x), source(x))


def test_weights_for_other_classes_load_everything_but_the_head(tmp_path):
    torch.manual_seed(0)
    imagenet = models.build("resnet18", 1000).eval()
    torch.save(imagenet.state_dict(), tmp_path / "r18.pth")
    model = models.build("resnet18", 6).eval()
    info = models.load_weights(model, tmp_path / "r18.pth", "fc")
    assert not info["head_loaded"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.features_of(x), imagenet.features_of(x))


def test_bad_weights_files_name_the_file_and_the_layer(tmp_path):
    model = models.build("resnet18", 6)
    state = model.state_dict()
    wrong = dict(state)
    wrong["layer3.0.conv1.weight"] = torch.zeros(128, 128, 3, 3)
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(WeightsError, match=r"wrong.pth: layer 'layer3.0.conv1.weight' has shape "
                                           r"\(128, 128, 3, 3\) in the file, the model needs \(256, 128, 3, 3\)"):
        models.load_weights(model, tmp_path / "wrong.pth", "fc")
    missing = {k: v for k, v in state.items() if k != "bn1.weight"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match=r"missing.pth: layer 'bn1.weight' is missing"):
        models.load_weights(model, tmp_path / "missing.pth", "fc")
    torch.save({**state, "extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(WeightsError, match=r"extra.pth: layer 'extra.weight' does not exist"):
        models.load_weights(model, tmp_path / "extra.pth", "fc")
    with pytest.raises(WeightsError, match="weights file not found: .*nope.pth"):
        models.load_weights(model, tmp_path / "nope.pth", "fc")
    (tmp_path / "text.pth").write_text("not torch")
    with pytest.raises(WeightsError, match="text.pth: not a readable torch state_dict"):
        models.load_weights(model, tmp_path / "text.pth", "fc")
