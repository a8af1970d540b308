import inspect

import pytest
import torch

from vfer.nets import backbones
from vfer.nets.backbones import WeightsError, build_backbone, load_weights
from vfer.nets.registry import BACKBONES

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
HEAD = {name: BACKBONES.meta(name)["head"] for name in BACKBONES}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small convolutions are much faster on one thread than on two busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small(name: str, num_classes: int = 6, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone(name, num_classes, **options).eval()


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_backbones_have_torchvision_names_and_shapes(name):
    with torch.device("meta"):
        model = build_backbone(name, 1000)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION[name]
    state = model.state_dict()
    for key, shape in KEYS[name].items():
        assert tuple(state[key].shape) == shape, key


@pytest.mark.parametrize("name, size, dims", [
    ("alexnet", 227, {"conv5": (256, 6, 6), "fc6": (4096,), "fc7": (4096,)}),
    ("vgg16", 224, {"pool5": (512, 7, 7), "fc6": (4096,), "fc7": (4096,)}),
    ("resnet18", 224, {"layer1": (64, 56, 56), "layer4": (512, 7, 7), "pool": (512,)}),
    ("resnet50", 224, {"layer1": (256, 56, 56), "layer3": (1024, 14, 14), "pool": (2048,)})])
def test_taps_have_their_dimensions(name, size, dims):
    with torch.device("meta"):
        model = build_backbone(name, 6)
        x = torch.empty(2, 3, size, size)
        outs = model.tap(x, list(dims))
        assert [tuple(o.shape) for o in outs] == [(2, *d) for d in dims.values()]
        assert tuple(model(x).shape) == (2, 6)


@pytest.mark.parametrize("name, size, dims", [
    ("alexnet", 67, {"conv5": (8, 1, 1), "fc6": (128,), "fc7": (128,)}),
    ("vgg16", 32, {"pool5": (16, 1, 1), "fc6": (128,), "fc7": (128,)}),
    ("resnet18", 32, {"layer1": (2, 8, 8), "layer2": (4, 4, 4), "layer3": (8, 2, 2),
                      "layer4": (16, 1, 1), "pool": (16,)}),
    ("se_resnet50", 32, {"layer2": (16, 4, 4), "pool": (64,)}),
    ("small_cnn", 24, {"conv": (16, 6, 6), "fc": (64,)})])
def test_small_widths_tap_in_one_pass(name, size, dims):
    options = {} if name == "small_cnn" else {"width": 1 / 32}
    model = small(name, input_size=size, **options)
    x = torch.randn(3, 3, size, size)
    outs = model.tap(x, list(dims))
    assert [tuple(o.shape) for o in outs] == [(3, *d) for d in dims.values()]
    assert model.tap(x, list(dims)[::-1])[0].shape == outs[-1].shape  # any order


def test_tap_stops_at_the_last_needed_tap():
    model = small("alexnet", width=1 / 32)
    seen = []
    model.classifier[4].register_forward_hook(lambda *args: seen.append("fc7"))
    model.tap(torch.randn(1, 3, 67, 67), ["fc6", "conv5"])
    assert seen == []
    model.tap(torch.randn(1, 3, 67, 67), ["fc7"])
    assert seen == ["fc7"]


def test_unknown_taps_and_map_heads_are_errors():
    model = small("resnet18", width=0.125)
    with pytest.raises(ValueError, match="has no tap 'fc7'"):
        model.tap(torch.randn(1, 3, 32, 32), ["fc7"])
    with pytest.raises(ValueError, match="no tap 'fc7'"):
        small("small_cnn", input_size=24).tap(torch.randn(1, 3, 24, 24), ["fc7"])
    with pytest.raises(ValueError, match=r"no head from tap 'layer3'.*\['pool'\]"):
        model.head_from("layer3")
    with pytest.raises(ValueError, match="Identity has no head from tap 'input'"):
        backbones.Identity().head_from("input")
    with pytest.raises(ValueError, match="MLP has no head from tap 'fc'"):
        backbones.MLP(4, (3,)).head_from("fc")


@pytest.mark.parametrize("name, tap, shape", [
    ("alexnet", "fc6", (2, 3, 67, 67)), ("alexnet", "fc7", (2, 3, 67, 67)),
    ("vgg16", "fc6", (2, 3, 32, 32)), ("vgg16", "fc7", (2, 3, 32, 32)),
    ("resnet18", "pool", (2, 3, 32, 32)), ("se_resnet18", "pool", (2, 3, 32, 32)),
    ("small_cnn", "fc", (2, 3, 24, 24)), ("c3d", "fc", (2, 3, 4, 16, 16))])
def test_head_from_a_vector_tap_equals_forward(name, tap, shape):
    options = {"input_size": 24} if name == "small_cnn" else {"width": 0.125}
    model = small(name, **options)
    x = torch.randn(*shape)
    with torch.no_grad():
        z = model.tap(x, [tap])[0]
        if name == "c3d":
            assert z.shape[1] == 1
            z = z[:, 0]
        assert torch.allclose(model.head_from(tap)(z), model(x), atol=1e-6)
    own = {id(p) for p in model.parameters()}
    assert {id(p) for p in model.head_from(tap).parameters()} <= own  # shared modules


@pytest.mark.parametrize("name", ["alexnet", "vgg16", "resnet18", "resnet50", "se_resnet18",
                                  "c3d"])
def test_width_shrinks_parameters_and_keeps_names(name):
    with torch.device("meta"):
        full, narrow = build_backbone(name, 6), build_backbone(name, 6, width=0.25)
    assert full.state_dict().keys() == narrow.state_dict().keys()
    n_full = sum(p.numel() for p in full.parameters())
    n_narrow = sum(p.numel() for p in narrow.parameters())
    assert n_narrow < n_full / 8  # conv and fc weights shrink ~16x
    first = next(iter(narrow.state_dict().values()))
    assert first.shape[0] == 16  # 64 * 0.25 channels


def test_tiny_widths_keep_at_least_one_channel():
    model = small("resnet18", width=0.001)
    assert model.conv1.out_channels == 1 and model.fc.in_features == 1
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 6)


def test_se_resnet_keys_are_torchvision_keys_plus_se():
    with torch.device("meta"):
        plain = set(build_backbone("resnet18", 1000).state_dict())
        se = set(build_backbone("se_resnet18", 1000).state_dict())
        se50 = build_backbone("se_resnet50", 1000, se_reduction=8).state_dict()
    assert plain < se
    extra = se - plain
    assert all(".se." in k for k in extra)
    assert len(extra) == 8 * 4  # 8 blocks, fc1/fc2 weight/bias
    assert "layer1.0.se.fc1.weight" in extra
    assert tuple(se50["layer4.2.se.fc1.weight"].shape) == (256, 2048)  # 2048 / 8


def test_torchvision_resnet_files_load_into_se_resnets(tmp_path):
    torch.manual_seed(0)
    source = build_backbone("resnet18", 6, width=0.25).eval()
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    torch.manual_seed(1)
    model = build_backbone("se_resnet18", 6, width=0.25).eval()
    se_before = model.layer2[1].se.fc1.weight.clone()
    with pytest.raises(WeightsError, match=r"r18.pth: layer 'layer1.0.se.fc1.weight' is missing"):
        load_weights(model, tmp_path / "r18.pth", "fc")
    meta = BACKBONES.meta("se_resnet18")
    info = load_weights(model, tmp_path / "r18.pth", meta["head"],
                        optional=meta["optional_weights"])
    assert info["head_loaded"] and info["missing_optional"] == 32
    state = model.state_dict()
    for key, value in source.state_dict().items():
        assert torch.equal(state[key], value), key
    assert torch.equal(model.layer2[1].se.fc1.weight, se_before)


def test_gates_of_ones_change_nothing_and_gates_of_zeros_silence_the_residual():
    model = small("resnet18", width=0.25)
    block = model.layer2[0]  # with a downsampling shortcut
    torch.manual_seed(2)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        assert torch.equal(block(x, gate=torch.ones_like(x)), block(x))
        residual_of_zeros = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(
            torch.zeros_like(x))))))
        expected = torch.relu(residual_of_zeros + block.downsample(x))
        assert torch.allclose(block(x, gate=torch.zeros_like(x)), expected, atol=1e-6)
        g = torch.rand_like(x)
        gated = torch.relu(block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x * g)))))
                           + block.downsample(x))
        assert torch.allclose(block(x, gate=g), gated, atol=1e-6)
        assert not torch.allclose(block(x, gate=g), block(x))


def test_blocks_in_order_equal_the_forward():
    model = small("se_resnet50", width=0.125)
    x = torch.randn(2, 3, 32, 32)
    names = [n for n, _ in model.blocks()]
    assert names[:3] == ["stem", "layer1.0", "layer1.1"] and names[-1] == "layer4.2"
    assert "layer3.0" in names and len(names) == 1 + 3 + 4 + 6 + 3
    with torch.no_grad():
        y = x
        for _, block in model.blocks():
            y = block(y)
        assert torch.equal(y, model.tap(x, ["layer4"])[0])
        assert torch.equal(model.fc(torch.flatten(model.avgpool(y), 1)), model(x))


def test_resnet_tap_takes_block_names_and_gates():
    model = small("resnet18", width=0.25)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        stem, l21, l2 = model.tap(x, ["stem", "layer2.1", "layer2"])
        assert torch.equal(l21, l2)
        g = torch.rand(2, 32, 4, 4)
        gated = model.tap(x, ["layer3"], gates={"layer3.0": g})[0]
        assert torch.equal(gated, model.layer3[1](model.layer3[0](l2, gate=g)))
    with pytest.raises(ValueError, match="cannot gate 'stem'"):
        model.tap(x, ["pool"], gates={"stem": g})
    with pytest.raises(ValueError, match="gate at 'layer4.0' lies after the last tap"):
        model.tap(x, ["layer2"], gates={"layer4.0": g})


@pytest.mark.parametrize("kernels", [(5, 3), (11, 9), (17, 15), (35, 33)])
def test_small_cnn_takes_the_kernels_of_paper_001(kernels):
    model = small("small_cnn", kernels=kernels, channels=(2, 4), input_size=128)  # few maps: fast
    conv, fc = model.tap(torch.randn(1, 3, 128, 128), ["conv", "fc"])
    assert conv.shape == (1, 4, 32, 32) and fc.shape == (1, 64)
    assert model.conv[0].kernel_size == (kernels[0],) * 2


def test_c3d_taps_keep_time():
    model = small("c3d", width=0.25)
    x = torch.randn(2, 3, 5, 32, 32)
    outs = model.tap(x, ["conv1", "conv2", "conv3", "conv4", "conv5", "fc"])
    assert [tuple(o.shape) for o in outs] == [
        (2, 5, 16, 32, 32), (2, 5, 16, 16, 16), (2, 5, 16, 8, 8), (2, 5, 16, 8, 8),
        (2, 5, 16, 4, 4), (2, 1, 18)]
    assert (outs[4] >= 0).all() and (outs[4] == 0).any()  # after ReLU, before pooling
    assert model(x).shape == (2, 6)


def test_c3d_full_width_keeps_the_old_keys():
    with torch.device("meta"):
        state = build_backbone("c3d", 6).state_dict()
    assert tuple(state["conv.13.weight"].shape) == (64, 64, 3, 3, 3)
    assert tuple(state["fc.2.weight"].shape) == (18, 64)
    assert tuple(state["classifier.1.weight"].shape) == (6, 18)


def test_identity_and_mlp():
    x = torch.randn(4, 3, 5, 5)
    assert backbones.Identity().tap(x, ["input"])[0] is x
    mlp = build_backbone("mlp", 6, in_channels=10, hidden=[8, 7])
    v = torch.randn(4, 10)
    assert mlp.tap(v, ["fc"])[0].shape == (4, 7)
    assert torch.equal(mlp(v), mlp.tap(v, ["fc"])[0]) and (mlp(v) >= 0).all()
    with pytest.raises(ValueError, match="at least one hidden layer"):
        backbones.MLP(10, ())


def test_mspp_pools_maps_over_grids():
    x = torch.zeros(2, 1, 8, 8)
    x[1, 0, 0, 0] = 5.0  # top-left pixel of image 1
    x[1, 0, 7, 7] = 3.0
    out = backbones.mspp(x, (1, 2))
    assert out.shape == (2, 1 + 4)
    assert out[0].tolist() == [0] * 5 and out[1].tolist() == [5, 5, 0, 0, 3]
    assert backbones.mspp(torch.zeros(3, 4, 4, 4)).shape == (3, 4 * (4 + 16 + 64))


def test_build_backbone_checks_options_and_the_registry_agrees():
    with pytest.raises(ValueError, match=r"backbone 'resnet18' has no option\(s\) \['kernels'\]"):
        build_backbone("resnet18", 6, kernels=(3, 3))
    with pytest.raises(ValueError, match="unknown backbone 'resnet19'"):
        build_backbone("resnet19", 6)
    for name in BACKBONES:
        meta = BACKBONES.meta(name)
        params = inspect.signature(BACKBONES.get(name)).parameters
        assert set(meta["options"]) <= set(params), name
        cls = BACKBONES.get(name)
        cls = cls if isinstance(cls, type) else backbones.ResNet
        assert tuple(meta["taps"]) == cls.TAPS, name
        assert meta["default_tap"] in meta["taps"], name


@pytest.mark.parametrize("name, shape", [("resnet18", (1, 3, 64, 64)),
                                         ("small_cnn", (1, 3, 128, 128)),
                                         ("c3d", (1, 3, 4, 64, 64))])
def test_weights_round_trip(tmp_path, name, shape):
    torch.manual_seed(0)
    source = build_backbone(name, 6).eval()
    path = tmp_path / f"{name}.pth"
    torch.save(source.state_dict(), path)
    torch.manual_seed(1)
    fresh = build_backbone(name, 6).eval()
    x = torch.randn(*shape)
    assert not torch.equal(fresh(x), source(x))
    info = load_weights(fresh, path, HEAD[name])
    assert info["head_loaded"] and len(info["sha256"]) == 64 and info["missing_optional"] == 0
    with torch.no_grad():
        assert torch.equal(fresh(x), source(x))


def test_weights_for_other_classes_load_everything_but_the_head(tmp_path):
    torch.manual_seed(0)
    imagenet = build_backbone("resnet18", 1000).eval()
    torch.save(imagenet.state_dict(), tmp_path / "r18.pth")
    model = build_backbone("resnet18", 6).eval()
    info = load_weights(model, tmp_path / "r18.pth", "fc")
    assert not info["head_loaded"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.tap(x, ["pool"])[0], imagenet.tap(x, ["pool"])[0])


def test_resnet_files_without_batch_counters_load(tmp_path):
    """torchvision's ResNet files predate BatchNorm's num_batches_tracked: they load whole."""
    torch.manual_seed(0)
    source = build_backbone("resnet18", 1000).eval()
    state = {k: v for k, v in source.state_dict().items() if "num_batches_tracked" not in k}
    assert len(state) == len(source.state_dict()) - 20  # one counter per BatchNorm
    torch.save(state, tmp_path / "r18.pth")
    model = build_backbone("resnet18", 1000).eval()
    info = load_weights(model, tmp_path / "r18.pth", "fc")
    assert info["head_loaded"] and info["missing_optional"] == 0
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))


def test_bad_weights_files_name_the_file_and_the_layer(tmp_path):
    model = build_backbone("resnet18", 6)
    state = model.state_dict()
    wrong = dict(state)
    wrong["layer3.0.conv1.weight"] = torch.zeros(128, 128, 3, 3)
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(WeightsError, match=r"wrong.pth: layer 'layer3.0.conv1.weight' has shape "
                                           r"\(128, 128, 3, 3\) in the file, the model needs "
                                           r"\(256, 128, 3, 3\)"):
        load_weights(model, tmp_path / "wrong.pth", "fc")
    missing = {k: v for k, v in state.items() if k != "bn1.weight"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match=r"missing.pth: layer 'bn1.weight' is missing"):
        load_weights(model, tmp_path / "missing.pth", "fc")
    with pytest.raises(WeightsError, match=r"missing.pth: layer 'bn1.weight' is missing"):
        load_weights(model, tmp_path / "missing.pth", "fc", optional=(".se.",))
    torch.save({**state, "extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(WeightsError, match=r"extra.pth: layer 'extra.weight' does not exist"):
        load_weights(model, tmp_path / "extra.pth", "fc")
    with pytest.raises(WeightsError, match="weights file not found: .*nope.pth"):
        load_weights(model, tmp_path / "nope.pth", "fc")
    (tmp_path / "text.pth").write_text("not torch")
    with pytest.raises(WeightsError, match="text.pth: not a readable torch state_dict"):
        load_weights(model, tmp_path / "text.pth", "fc")


@pytest.mark.parametrize("fmt", [torch.channels_last, torch.contiguous_format])
def test_flatten_hands_the_gradient_back_in_the_maps_memory_format(fmt):
    leaf = torch.randn(2, 3, 4, 5).contiguous(memory_format=fmt).requires_grad_()
    weights = torch.randn(2, 60)
    grads = {}
    for name, flatten in (("vfer", backbones.flatten), ("torch", lambda x: torch.flatten(x, 1))):
        maps = leaf * 1.0  # as a layer's output: the gradient that reaches it, not a leaf's
        maps.register_hook(lambda g, name=name: grads.__setitem__(name, g))
        out = flatten(maps)
        assert torch.equal(out, torch.flatten(leaf, 1))
        (out * weights).sum().backward()
    assert torch.equal(grads["vfer"], grads["torch"])
    assert grads["vfer"].is_contiguous(memory_format=fmt)
