import copy
import inspect
import math

import pytest
import torch
from torch import nn

from vfer.nets import fusion, heads, temporal
from vfer.nets.network import Network
from vfer.nets.registry import FUSIONS, HEADS, TEMPORAL


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small convolutions are much faster on one thread than on two busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


# -- fusions -------------------------------------------------------------------------------

def test_fusions_on_hand_computed_inputs():
    a = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # (B=1, T=2, D=2)
    b = torch.tensor([[[5.0, -1.0], [0.5, 2.0]]])
    shapes = [(2,), (2,)]
    assert fusion.Sum(shapes)([a, b]).tolist() == [[[6, 1], [3.5, 6]]]
    assert fusion.Product(shapes)([a, b]).tolist() == [[[5, -2], [1.5, 8]]]
    cat = fusion.Concat(shapes)
    assert cat.out_shape == (4,) and cat([a, b]).tolist() == [[[1, 2, 5, -1], [3, 4, 0.5, 2]]]
    weighted = fusion.WeightedSum(shapes)
    assert torch.equal(weighted([a, b]), a + b)  # a = 0 initially
    with torch.no_grad():
        weighted.a.fill_(math.log(2))
    assert torch.allclose(weighted([a, b]), 2 * (a + b))


def test_fusions_of_maps_and_shape_errors():
    x, y = torch.randn(2, 3, 4, 5, 5), torch.randn(2, 3, 6, 5, 5)
    cat = fusion.Concat([(4, 5, 5), (6, 5, 5)])
    assert cat.out_shape == (10, 5, 5) and torch.equal(cat([x, y])[:, :, 4:], y)
    weighted = fusion.WeightedSum([(4, 5, 5), (4, 5, 5)])
    assert weighted.a.shape == (4, 1, 1)
    with torch.no_grad():
        weighted.a[1] = math.log(3)
    out = weighted([x, x])
    assert torch.allclose(out[:, :, 1], 6 * x[:, :, 1])
    assert torch.allclose(out[:, :, 0], 2 * x[:, :, 0])
    with pytest.raises(ValueError, match=r"sum fusion needs equal shapes, got \[\(4,\), \(5,\)\]"):
        fusion.Sum([(4,), (5,)])
    with pytest.raises(ValueError, match="product fusion needs equal shapes"):
        fusion.Product([(4, 5, 5), (4, 6, 6)])
    with pytest.raises(ValueError, match="concat fusion needs all vectors or all maps"):
        fusion.Concat([(4, 5, 5), (4, 6, 6)])
    with pytest.raises(ValueError, match="concat fusion needs all vectors or all maps"):
        fusion.Concat([(4,), (4, 1, 1)])


# -- temporal models -----------------------------------------------------------------------

@pytest.mark.parametrize("kind, in_shape, options, out_dim", [
    ("mean", (6,), {}, 6), ("max", (6,), {}, 6), ("lstm", (6,), {"hidden": 5}, 5),
    ("lstm", (6,), {"hidden": 5, "layers": 2, "dropout": 0.1}, 5),
    ("bilstm", (6,), {"hidden": 5}, 10),
    ("convlstm", (3, 8, 8), {"channels": (4, 6), "kernels": (3, 3)}, 6),
    ("enhanced_convlstm", (3, 8, 8), {"channels": (4, 6), "kernels": (5, 3), "groups": 2}, 6)])
def test_temporal_models_reduce_time(kind, in_shape, options, out_dim):
    torch.manual_seed(0)
    model = TEMPORAL.build(kind, in_shape, **options)
    assert model.out_dim == out_dim
    assert model(torch.randn(2, 3, *in_shape)).shape == (2, out_dim)
    assert TEMPORAL.meta(kind)["learned"] == any(True for _ in model.parameters())


@pytest.mark.parametrize("kind", ["sum", "product", "concat", "weighted_sum"])
def test_fusions_say_whether_they_learn(kind):
    from vfer.nets.registry import FUSIONS

    model = FUSIONS.build(kind, [(4,), (4,)])
    assert FUSIONS.meta(kind)["learned"] == any(True for _ in model.parameters())


def test_mean_and_max_values():
    x = torch.tensor([[[1.0, 5.0], [3.0, -1.0]]])
    assert temporal.Mean((2,))(x).tolist() == [[2, 2]]
    assert temporal.Max((2,))(x).tolist() == [[3, 5]]
    with pytest.raises(ValueError, match=r"mean takes vector sequences \(D,\), got per-step "
                                         r"shape \(3, 4, 4\)"):
        temporal.Mean((3, 4, 4))


def test_lstm_is_the_last_step_of_torch_lstm():
    torch.manual_seed(0)
    model = temporal.LSTM((4,), hidden=3, layers=2).eval()
    reference = nn.LSTM(4, 3, 2, batch_first=True)
    reference.load_state_dict(model.lstm.state_dict())
    x = torch.randn(2, 5, 4)
    out, (h, _) = reference(x)
    assert torch.allclose(model(x), out[:, -1]) and torch.allclose(model(x), h[-1])


def test_bilstm_is_each_directions_final_state():
    torch.manual_seed(0)
    model = temporal.BiLSTM((4,), hidden=3, layers=2).eval()
    x = torch.randn(2, 5, 4)
    _, (h, _) = model.lstm(x)  # h: (layers * 2, B, hidden), last layer's directions last
    assert torch.allclose(model(x), torch.cat([h[-2], h[-1]], 1))
    assert not torch.allclose(model(x)[:, 3:], model.lstm(x)[0][:, -1, 3:])


def test_convlstm_cell_follows_the_peephole_formula():
    model = temporal.ConvLSTM((1, 2, 2), channels=(1,), kernels=(1,), pool=False)
    cell = model.layers[0]
    bi, bf, bc, bo, wx = 0.2, -0.4, 0.3, 0.1, 0.5
    with torch.no_grad():
        cell.conv_x.weight.zero_()
        cell.conv_x.weight[2] = wx  # candidate: tanh(wx * x + bc)
        cell.conv_x.bias.copy_(torch.tensor([bi, bf, bc, bo]))
        cell.conv_h.weight.fill_(0.0)
        cell.w_ci.fill_(0.3)
        cell.w_cf.fill_(-0.2)
        cell.w_co.fill_(0.7)
    x = torch.tensor([1.0, -2.0]).view(1, 2, 1, 1, 1).expand(1, 2, 1, 2, 2)
    i1, f1, g1, o1 = sig(bi), sig(bf), math.tanh(wx * 1 + bc), sig(bo)
    c1 = i1 * g1
    i2, f2 = sig(bi + 0.3 * c1), sig(bf - 0.2 * c1)
    c2 = f2 * c1 + i2 * math.tanh(wx * -2 + bc)
    h2 = sig(bo + 0.7 * c1) * math.tanh(c2)  # o uses c_{t-1}
    hidden = cell(x)
    assert hidden[0, 0, 0].flatten().tolist() == pytest.approx([o1 * math.tanh(c1)] * 4)
    assert model(x).item() == pytest.approx(h2, abs=1e-6)
    assert abs(h2 - sig(bo + 0.7 * c2) * math.tanh(c2)) > 1e-3  # o with c_t would differ


def reference_cells(cell, x: torch.Tensor, enhanced: bool) -> torch.Tensor:
    """The (enhanced) ConvLSTM formulas, gate by gate, from the cell's parameters."""
    n, pad = cell.channels, cell.conv_x.kernel_size[0] // 2

    def conv(weight, inp, gate, bias=None):
        part = slice(gate * n, (gate + 1) * n)
        return nn.functional.conv2d(inp, weight[part], None if bias is None else bias[part],
                                    padding=pad)

    wx, bx, wh = cell.conv_x.weight, cell.conv_x.bias, cell.conv_h.weight
    h = h_before = c = torch.zeros(x.shape[0], n, *x.shape[3:])
    out = []
    for xt in x.unbind(1):
        i = torch.sigmoid(conv(wx, xt, 0, bx) + conv(wh, h, 0) + cell.w_ci * c)
        f = torch.sigmoid(conv(wx, xt, 1, bx) + conv(wh, h, 1) + cell.w_cf * c)
        o = torch.sigmoid(conv(wx, xt, 3, bx) + conv(wh, h, 3) + cell.w_co * c)
        c = f * c + i * torch.tanh(conv(wx, xt, 2, bx) + conv(wh, h, 2))
        new = o * torch.tanh(c)
        if enhanced:
            skip = nn.functional.conv2d(xt, cell.conv_s.weight, padding=pad)
            new = nn.functional.group_norm(new + h_before + skip, cell.norm.num_groups,
                                           cell.norm.weight, cell.norm.bias, cell.norm.eps)
        h_before, h = h, new
        out.append(h)
    return torch.stack(out, 1)


@pytest.mark.parametrize("enhanced", [False, True])
def test_cells_match_the_formulas_with_random_parameters(enhanced):
    torch.manual_seed(0)
    kind = temporal.EnhancedConvLSTM if enhanced else temporal.ConvLSTM
    model = kind((2, 4, 4), channels=(4,), kernels=(3,), pool=False)
    cell = model.layers[0]
    with torch.no_grad():
        for p in cell.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    x = torch.randn(2, 4, 2, 4, 4)
    with torch.no_grad():
        expected = reference_cells(cell, x, enhanced)
        assert torch.allclose(cell(x), expected, atol=1e-5)
        assert torch.allclose(model(x), expected[:, -1].mean((2, 3)), atol=1e-5)


def test_enhanced_convlstm_differs_only_by_its_skip_terms():
    torch.manual_seed(0)
    plain = temporal.ConvLSTM((2, 4, 4), channels=(4,), kernels=(3,), pool=False)
    enhanced = temporal.EnhancedConvLSTM((2, 4, 4), channels=(4,), kernels=(3,), pool=False)
    with torch.no_grad():
        for p in plain.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
        missing = enhanced.load_state_dict(plain.state_dict(), strict=False).missing_keys
        assert sorted(missing) == ["layers.0.conv_s.weight", "layers.0.norm.bias",
                                   "layers.0.norm.weight"]
        enhanced.layers[0].conv_s.weight.zero_()
        enhanced.layers[0].norm = nn.Identity()
        x = torch.randn(2, 3, 2, 4, 4)
        p, e = plain.layers[0](x), enhanced.layers[0](x)
    assert torch.equal(e[:, :2], p[:, :2])  # h_{-1} = h_0 = 0
    assert not torch.allclose(e[:, 2], p[:, 2])
    assert torch.allclose(e[:, 2], p[:, 2] + e[:, 0], atol=1e-6)  # + h_{t-2} at t = 3


def test_stacked_convlstm_pools_between_layers():
    model = temporal.EnhancedConvLSTM((3, 16, 16), channels=(4, 6, 8, 8),
                                      kernels=(5, 5, 3, 3), groups=4)
    assert [tuple(c.w_ci.shape) for c in model.layers] == [(4, 16, 16), (6, 8, 8), (8, 4, 4),
                                                           (8, 2, 2)]
    assert [c.norm.num_groups for c in model.layers] == [4, 3, 4, 4]
    assert model(torch.randn(1, 2, 3, 16, 16)).shape == (1, 8)
    unpooled = temporal.ConvLSTM((3, 16, 16), channels=(4, 6), kernels=(3, 3), pool=False)
    assert unpooled.layers[1].w_co.shape == (6, 16, 16)
    with pytest.raises(ValueError, match="too small for 4 layers"):
        temporal.ConvLSTM((3, 4, 4), channels=(4,) * 4, kernels=(3,) * 4)
    with pytest.raises(ValueError, match="one entry per layer"):
        temporal.ConvLSTM((3, 4, 4), channels=(4, 4), kernels=(3,))


def test_nested_lstm_uses_every_tap():
    torch.manual_seed(0)
    model = temporal.NestedLSTM([(5,), (7,), (3,)], hidden=4, layers=2, c_hidden=6, c_layers=2)
    assert model.out_dim == 6 and len(model.t_lstms) == 3
    xs = [torch.randn(2, 4, d, requires_grad=True) for d in (5, 7, 3)]
    out = model(xs)
    assert out.shape == (2, 6)
    out.sum().backward()
    assert all(x.grad.abs().sum() > 0 for x in xs)
    with pytest.raises(ValueError, match="built for 3 tap sequences, got 2"):
        model(xs[:2])


def test_heads():
    torch.manual_seed(0)
    head = heads.MLPHead(6, 3, hidden=(5, 4), dropout=0.0)
    z = torch.randn(2, 6)
    features, logits = head(z)
    assert features.shape == (2, 4) and logits.shape == (2, 3) and (features >= 0).all()
    assert torch.allclose(logits, head.out(features))
    plain = heads.MLPHead(6, 3, dropout=0.0)
    features, logits = plain(z)
    assert torch.equal(features, z) and torch.allclose(logits, plain.out[1](z))


def test_registry_options_are_constructor_parameters():
    for registry in (TEMPORAL, FUSIONS, HEADS):
        for name in registry:
            params = inspect.signature(registry.get(name)).parameters
            assert set(registry.meta(name).get("options", ())) <= set(params), name


# -- networks ------------------------------------------------------------------------------

def branch(name, steps, backbone="small_cnn", size=24, channels=3, **extra):
    return {"name": name, "input": name, "steps": steps, "channels": channels, "size": size,
            "backbone": backbone, **extra}


def inputs_for(net: Network, batch: int = 2) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {b.name: torch.randn(batch, b.steps, b.channels,
                                *((b.size, b.size) if b.size else ()))
            for b in net.branches}


TWO_STREAM = {
    "name": "two_stream_lstm",
    "branches": [branch("rgb", 4, backbone_options={"channels": [4, 8]}, taps=["fc"]),
                 branch("flow", 3, backbone_options={"channels": [4, 8]}, taps=["fc"])],
    "fusion": {"kind": "concat", "gating": None},
    "temporal": {"kind": "lstm", "hidden": 8, "layers": 1},
    "head": {"kind": "mlp", "hidden": [6], "dropout": 0.5},
    "features": "penultimate",
}


def network(spec: dict, num_classes: int = 5) -> Network:
    torch.manual_seed(0)
    return Network(spec, num_classes)


def test_two_stream_network_trains_both_backbones():
    net = network(TWO_STREAM)
    assert net.training and net.feature_dim == 6
    assert net.fusion.out_shape == (128,) and net.temporal.out_dim == 8
    x = inputs_for(net)
    features, logits = net.features_and_logits(x)
    assert features.shape == (2, 6) and logits.shape == (2, 5)
    logits.square().sum().backward()
    assert set(net.backbones()) == {"rgb", "flow"}
    for name, backbone in net.backbones().items():
        for key, p in backbone.named_parameters():
            if key.startswith("classifier."):  # the backbone's own head is not used
                assert p.grad is None, (name, key)
            else:
                assert p.grad is not None and p.grad.abs().sum() > 0, (name, key)


def test_shared_backbones_have_one_set_of_parameters():
    shared = copy.deepcopy(TWO_STREAM)
    shared["branches"][1]["share"] = "rgb"
    one, two = network(shared), network(TWO_STREAM)
    assert list(one.backbones()) == ["rgb"]
    backbone = sum(p.numel() for p in two.backbones()["flow"].parameters())
    assert sum(p.numel() for p in one.parameters()) == \
        sum(p.numel() for p in two.parameters()) - backbone
    x = inputs_for(one)
    x["flow"] = x["rgb"][:, :3]
    encoded = one._encode(x)
    assert torch.equal(encoded["rgb"][0][:, :3], encoded["flow"][0])
    different = copy.deepcopy(shared)
    different["branches"][1]["backbone_options"] = {"channels": [4, 4]}
    with pytest.raises(ValueError, match="network 'two_stream_lstm', branch 'flow': shares "
                                         "'rgb' but"):
        network(different)


GATED = {
    "name": "mffcnn",
    "branches": [branch("rgb", 3, "se_resnet18", 32, backbone_options={"width": 0.25},
                        taps=["pool"]),
                 branch("flow", 1, "se_resnet18", 32, channels=4,
                        backbone_options={"width": 0.25}, taps=["pool"])],
    "fusion": {"kind": "concat", "gating": {"from": "flow", "to": "rgb",
                                            "at": ["layer3.0", "layer4.0"]}},
    "temporal": {"kind": "mean"},
    "head": {"kind": "mlp", "hidden": [], "dropout": 0.0},
}


def test_gating_multiplies_the_gated_blocks_inputs():
    net = network(GATED).eval()
    x = inputs_for(net)
    rgb, flow = net.backbones()["rgb"], net.backbones()["flow"]
    with torch.no_grad():
        into3, into4 = flow.tap(x["flow"][:, 0], ["layer2", "layer3"])  # flow T = 1
        gates = {"layer3.0": into3.repeat_interleave(3, 0),
                 "layer4.0": into4.repeat_interleave(3, 0)}
        expected = rgb.tap(x["rgb"].flatten(0, 1), ["pool"], gates=gates)[0]
        encoded = net._encode(x)
        assert torch.allclose(encoded["rgb"][0].flatten(0, 1), expected, atol=1e-6)
        ungated = rgb.tap(x["rgb"].flatten(0, 1), ["pool"])[0]
        assert not torch.allclose(expected, ungated)
        assert torch.equal(encoded["flow"][0][:, 0], flow.tap(x["flow"][:, 0], ["pool"])[0])


def test_gated_network_trains_both_branches_and_names_bad_blocks():
    net = network(GATED)
    assert net.feature_dim == 256 and net.head.out[1].in_features == 256  # 2 x 512 / 4
    logits = net(inputs_for(net))
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    logits.square().sum().backward()
    for name in ("rgb", "flow"):
        block = net.backbones()[name].layer4[0]
        assert block.conv1.weight.grad.abs().sum() > 0 and block.se.fc2.weight.grad.abs().sum() > 0
    reverse = copy.deepcopy(GATED)
    reverse["fusion"]["gating"] = {"from": "rgb", "to": "flow", "at": ["layer2.1"]}
    net = network(reverse).eval()
    x = inputs_for(net)
    with torch.no_grad():
        into = net.backbones()["rgb"].tap(x["rgb"].flatten(0, 1), ["layer2.0"])[0]
        gate = into.unflatten(0, (2, 3)).mean(1)  # averaged over the gater's time steps
        expected = net.backbones()["flow"].tap(x["flow"][:, 0], ["pool"],
                                               gates={"layer2.1": gate})[0]
        assert torch.allclose(net._encode(x)["flow"][0][:, 0], expected, atol=1e-6)
    for block in ("layer5.0", "stem"):
        bad = copy.deepcopy(GATED)
        bad["fusion"]["gating"]["at"] = ["layer3.0", block]
        with pytest.raises(ValueError, match=rf"network 'mffcnn', fusion.gating: unknown block "
                                             rf"'{block}'"):
            network(bad)
    bad = copy.deepcopy(GATED)
    bad["branches"][1]["backbone_options"] = {"width": 0.5}
    with pytest.raises(ValueError, match="need the same backbone, options and size"):
        network(bad)
    bad = copy.deepcopy(GATED)
    bad["branches"][0]["taps"] = ["layer2"]
    with pytest.raises(ValueError, match="branch 'rgb': gate at 'layer3.0' lies after"):
        network(bad)


def vectors(name, steps, dim=3):
    return branch(name, steps, "identity", None, channels=dim)


def test_time_alignment_of_frames_flows_and_single_steps():
    spec = {"name": "align", "branches": [vectors("a", 16), vectors("b", 15), vectors("c", 1)],
            "fusion": {"kind": "sum"}, "temporal": {"kind": "mean"},
            "head": {"kind": "mlp"}, "features": "pooled"}
    net = network(spec)
    x = inputs_for(net)
    features, _ = net.features_and_logits(x)
    expected = (x["a"][:, :15] + x["b"] + x["c"]).mean(1)
    assert torch.allclose(features, expected, atol=1e-6)
    spec["branches"][1] = vectors("b", 14)
    with pytest.raises(ValueError, match=r"network 'align', fusion: cannot align time steps "
                                         r"\{'a.input': 16, 'b.input': 14, 'c.input': 1\}"):
        network(spec)


def test_backbone_head_continues_the_backbone():
    spec = {"name": "finetune", "branches": [branch("rgb", 3, taps=["fc"])],
            "temporal": {"kind": "mean"}, "head": {"kind": "backbone"}}
    net = network(spec).eval()
    x = inputs_for(net)
    backbone = net.backbones()["rgb"]
    with torch.no_grad():
        features, logits = net.features_and_logits(x)
        fc = backbone.tap(x["rgb"].flatten(0, 1), ["fc"])[0].unflatten(0, (2, 3)).mean(1)
        assert torch.allclose(logits, backbone.classifier(fc), atol=1e-6)
        assert torch.allclose(features, fc, atol=1e-6) and net.feature_dim == 64
    spec["temporal"] = {"kind": "lstm", "hidden": 8}
    with pytest.raises(ValueError, match="head: kind 'backbone' needs the tap's size 64"):
        network(spec)
    spec["branches"][0]["taps"] = ["conv"]
    with pytest.raises(ValueError, match="head: kind 'backbone' needs a vector tap"):
        network(spec)


def test_backbone_head_features_are_its_last_hidden_layer():
    """AlexNet tapped at fc6: the written (penultimate) features are fc7, not fc6."""
    spec = {"name": "alex", "temporal": {"kind": "mean"}, "head": {"kind": "backbone"},
            "branches": [branch("rgb", 1, backbone="alexnet", size=67, taps=["fc6"],
                                backbone_options={"width": 0.0625})]}
    net = network(spec, 3).eval()
    x = inputs_for(net)
    backbone = net.backbones()["rgb"]
    with torch.no_grad():
        features, logits = net.features_and_logits(x)
        fc7 = backbone.tap(x["rgb"].flatten(0, 1), ["fc7"])[0]
        assert torch.allclose(features, fc7, atol=1e-6)
        assert torch.allclose(logits, backbone.classifier[-1](fc7), atol=1e-6)


def test_emotional_vlan_like_network():
    spec = {"name": "emotional_vlan",
            "branches": [branch("rgb", 3, "alexnet", 67, backbone_options={"width": 0.125},
                                taps=["fc7"]),
                         branch("flow", 3, "alexnet", 67, backbone_options={"width": 0.125},
                                taps=["fc7"])],
            "fusion": {"kind": "weighted_sum"}, "temporal": {"kind": "mean"},
            "head": {"kind": "mlp", "hidden": [], "dropout": 0.0}}
    net = network(spec)
    assert net.fusion.a.shape == (512,) and net.feature_dim == 512
    logits = net(inputs_for(net))
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()


def stc_nlstm(nested_in_branch: bool) -> dict:
    nested = {"kind": "nested_lstm", "hidden": 8, "layers": 2, "c_hidden": 6, "c_layers": 2}
    c3d = branch("rgb", 4, "c3d", 32, backbone_options={"width": 0.25},
                 taps=["conv1", "conv2", "conv3", "conv4", "conv5"], pool="mspp")
    if nested_in_branch:
        c3d["temporal"] = nested
    return {"name": "stc_nlstm", "branches": [c3d], "fusion": {"kind": None},
            "temporal": None if nested_in_branch else nested,
            "head": {"kind": "mlp", "hidden": [], "dropout": 0.0}, "features": "pooled"}


@pytest.mark.parametrize("nested_in_branch", [False, True])
def test_stc_nlstm_like_network(nested_in_branch):
    net = network(stc_nlstm(nested_in_branch))
    nested = net.branch_temporals["rgb"] if nested_in_branch else net.temporal
    assert [lstm.input_size for lstm in nested.t_lstms] == [16 * (4 + 16 + 64)] * 5
    assert net.feature_dim == 6
    logits = net(inputs_for(net))
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()


def test_nested_lstm_refuses_a_fusion_and_unpooled_maps():
    spec = stc_nlstm(False)
    spec["fusion"] = {"kind": "concat"}
    with pytest.raises(ValueError, match="takes the tap sequences unfused"):
        network(spec)
    spec = stc_nlstm(False)
    spec["branches"][0]["pool"] = "none"
    with pytest.raises(ValueError, match=r"network 'stc_nlstm', temporal: 'nested_lstm' takes "
                                         r"vector sequences"):
        network(spec)


def test_enhanced_convlstm_like_network():
    convlstm = {"kind": "enhanced_convlstm", "channels": [4, 4, 4, 4], "kernels": [5, 5, 3, 3],
                "groups": 2}
    dynamic = {"backbone_options": {"width": 0.25}, "taps": ["pool"], "activation": "tanh",
               "project": 8}
    spec = {"name": "enhanced_convlstm",
            "branches": [branch("rgb", 4, "identity", 16, temporal=convlstm, activation="tanh",
                                project=8),
                         branch("flow", 3, "identity", 16, temporal=convlstm,
                                activation="tanh", project=8),
                         branch("dynamic_rgb", 1, "resnet18", 32, **dynamic),
                         branch("dynamic_flow", 1, "resnet18", 32, **dynamic)],
            "fusion": {"kind": "sum"}, "temporal": {"kind": "mean"},
            "head": {"kind": "mlp", "hidden": [16, 12], "dropout": 0.5}}
    net = network(spec)
    assert sum(isinstance(m, nn.Linear) for m in net.head.modules()) == 3
    assert set(net.branch_temporals) == {"rgb", "flow"} and net.feature_dim == 12
    logits = net(inputs_for(net))
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert net.branch_temporals["rgb"].layers[3].conv_s.weight.grad.abs().sum() > 0


def test_branch_activation_and_projection():
    spec = {"name": "landmarks", "branches": [
        branch("pts", 4, "mlp", None, channels=10, backbone_options={"hidden": [7]},
               activation="l2", project=3)],
        "temporal": {"kind": "max"}, "head": {"kind": "mlp"}, "features": "pooled"}
    net = network(spec).eval()
    x = inputs_for(net)
    mlp, project = net.backbones()["pts"], net.projections["pts"][0]
    with torch.no_grad():
        fc = mlp(x["pts"])
        expected = project(fc / fc.norm(dim=-1, keepdim=True)).amax(1)
        assert torch.allclose(net.features_and_logits(x)[0], expected, atol=1e-6)
    spec["branches"][0]["size"] = 8
    with pytest.raises(ValueError, match="backbone 'mlp' takes vectors: size must be None"):
        network(spec)


@pytest.mark.parametrize("change, message", [
    (lambda s: s["branches"][0].update(colour=1), r"branch 'rgb': unknown key\(s\) \['colour'\]"),
    (lambda s: s["branches"][1].pop("steps"), "branch 'flow': missing key 'steps'"),
    (lambda s: s["branches"][1].update(name="rgb"), "branch 'rgb': name used twice"),
    (lambda s: s["branches"][0].update(taps=["fc9"]), "branch 'rgb': backbone 'small_cnn' has "
                                                      "no tap 'fc9'"),
    (lambda s: s["branches"][0].update(pool="mean"), "branch 'rgb': pool must be one of"),
    (lambda s: s["branches"][0].update(backbone_options={"width": 2}),
     r"branch 'rgb' backbone_options: unknown key\(s\) \['width'\]"),
    (lambda s: s["branches"][0].update(size=None), "backbone 'small_cnn' takes images"),
    (lambda s: s["branches"][1].update(share="flow"), "share 'flow' is not an earlier branch"),
    (lambda s: s["branches"][0].update(temporal={"kind": "convlstm"}),
     r"branch 'rgb' temporal: 'convlstm' takes map sequences, got per-step shape \(64,\)"),
    (lambda s: [b.update(taps=["conv"]) for b in s["branches"]],
     r"temporal: 'lstm' takes vector sequences, got per-step shape \(16, 6, 6\)"),
    (lambda s: s["branches"][0].update(taps=["conv"], project=4), "branch 'rgb': l2 and project "
                                                                  "need vectors"),
    (lambda s: s.update(fusion=None), r"fusion: 2 sequences \(\['rgb.fc', 'flow.fc'\]\) need a "
                                      r"fusion"),
    (lambda s: (s["branches"][1].update(backbone_options={"channels": [4, 8], "fc": 32}),
                s.update(fusion={"kind": "sum"})),
     r"fusion: sum fusion needs equal shapes, got \[\(64,\), \(32,\)\]"),
    (lambda s: s.update(fusion={"kind": "mix"}), "fusion: unknown fusion 'mix'"),
    (lambda s: s.update(temporal={"kind": "lstm", "size": 3}),
     r"temporal: unknown key\(s\) \['size'\]"),
    (lambda s: s.update(temporal=None), "temporal: None needs a sequence of 1 step, got 3"),
    (lambda s: s.update(head={"kind": "svm"}), "head: unknown head 'svm'"),
    (lambda s: s.update(head={"kind": "backbone"}), "kind 'backbone' needs one branch"),
    (lambda s: s.update(features="logits"), "features: must be one of"),
    (lambda s: s.pop("head"), "spec: missing key 'head'"),
])
def test_bad_specs_name_the_network_and_the_key(change, message):
    spec = copy.deepcopy(TWO_STREAM)
    change(spec)
    with pytest.raises(ValueError, match=r"network 'two_stream_lstm', .*" + message):
        network(spec)


def test_inputs_are_checked():
    net = network(TWO_STREAM)
    x = inputs_for(net)
    with pytest.raises(ValueError, match="branch 'flow': no input given"):
        net({"rgb": x["rgb"]})
    sampled = {"rgb": x["rgb"][:, :2], "flow": x["flow"][:, :2]}  # the same sampled steps
    assert net(sampled).shape == net(x).shape
    with pytest.raises(ValueError, match=r"inputs: sampled time steps differ between branches"):
        net({"rgb": x["rgb"], "flow": x["flow"][:, :2]})
    with pytest.raises(ValueError, match=r"branch 'flow': input shape \(B, \*\(3, 3, 20, 20\)\), "
                                         r"expected \(B, 3, 3, 24, 24\)"):
        net({"rgb": x["rgb"], "flow": x["flow"][..., :20, :20]})


@pytest.mark.parametrize("spec", [TWO_STREAM, GATED, {
    "name": "finetune", "branches": [branch("rgb", 3, taps=["fc"])],
    "temporal": {"kind": "max"}, "head": {"kind": "backbone"}}])
def test_state_dicts_round_trip_through_a_network_built_from_the_spec(spec):
    source = network(spec).eval()
    torch.manual_seed(7)
    fresh = Network(spec, 5).eval()
    x = inputs_for(source)
    with torch.no_grad():
        assert not torch.allclose(fresh(x), source(x))
        fresh.load_state_dict(source.state_dict())
        assert torch.equal(fresh(x), source(x))
