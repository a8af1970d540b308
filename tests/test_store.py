"""Stage files: one reader/writer per layout, checksums, clear errors for damaged files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from vfer import cli
from vfer.inputs import InputSource
from vfer.store import (FLOW_ZERO, DynamicFile, FacesFile, FeaturesFile, FlowFile,
                        SegmentsFile, StageFileError, check_tree, dequantise, flow_image)


def faces_shard(path, videos=("a", "b"), frames=20, size=16, seed=0):
    rng = np.random.default_rng(seed)
    with FacesFile.create(path, {"method": "none"}) as f:
        for v in videos:
            n = frames
            f.write_video(v, rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8),
                          np.zeros((n, 4), np.float32), np.ones(n, np.float32),
                          np.zeros((n, 2, 2), np.float32), np.zeros((n, 478, 3), np.float32),
                          np.ones(n, bool), np.arange(n, dtype=np.int32),
                          np.arange(n, dtype=np.int32), {"path": f"{v}.avi"})
    return path


def test_every_dataset_is_checksummed_and_a_flipped_byte_is_an_error(tmp_path):
    path = faces_shard(tmp_path / "faces.h5")
    with h5py.File(path) as f:
        assert all(ds.fletcher32 for ds in f["a"].values())
        offset = f["a"]["frames"].id.get_chunk_info(0).byte_offset
    with FacesFile(path) as f:
        before = f.frames("a")
    data = bytearray(path.read_bytes())
    data[offset + 100] ^= 0xFF  # same size, one byte inside a chunk
    path.write_bytes(bytes(data))
    with FacesFile(path) as f:
        with pytest.raises(StageFileError, match=r"faces.h5: damaged faces file .*vfer check"):
            f.frames("a")
        assert np.array_equal(f.frames("b")[:1], f.frames("b")[:1])  # other videos still read
    assert before.shape == (20, 16, 16, 3)
    damaged = check_tree(tmp_path)
    assert [p.name for p, _ in damaged] == ["faces.h5"]
    assert cli.main(["check", str(tmp_path)]) == 1
    assert cli.main(["check", str(tmp_path), "--fix"]) == 0 and not path.exists()


def test_truncated_files_and_wrong_stages_name_the_file(tmp_path):
    path = faces_shard(tmp_path / "faces.h5")
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(StageFileError, match=r"faces.h5: damaged faces file"):
        FacesFile(path)
    other = faces_shard(tmp_path / "other.h5")
    with pytest.raises(StageFileError, match=r"other.h5: expected a 'segments' file, found "
                                             r"stage='faces'"):
        SegmentsFile(other)
    with pytest.raises(StageFileError, match="nope.h5: flow file not found"):
        FlowFile(tmp_path / "nope.h5")


def test_a_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "features.h5"
    with pytest.raises(RuntimeError):
        with FeaturesFile.create(path, {}) as f:
            f.write_video("a", np.ones((2, 3)))
            raise RuntimeError("killed")
    assert not path.exists() and not list(tmp_path.iterdir())


def test_non_finite_features_are_an_error_written_or_read(tmp_path):
    path = tmp_path / "features.h5"
    nan = np.ones((3, 4), np.float32)
    nan[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"features.h5: v1: 1 of the 12 values of its features "
                                         r"are NaN or infinite"):
        with FeaturesFile.create(path, {}) as f:
            f.write_video("v0", np.ones((3, 4)), np.full((3, 2), 0.5))
            f.write_video("v1", nan)
    assert not path.exists()
    with pytest.raises(ValueError, match="v0: 1 of the 6 values of its scores"):
        with FeaturesFile.create(path, {}) as f:
            f.write_video("v0", np.ones((3, 4)), np.array([[0.5, 0.5]] * 2 + [[np.inf, 0]]))
    with FeaturesFile.create(path, {}) as f:  # a file from elsewhere: NaN past write_video
        f.write_video("v0", np.ones((3, 4)))
        f._write("v1", {"features": nan})
    with FeaturesFile(path) as f:
        assert f.features("v0").shape == (3, 4)
        with pytest.raises(StageFileError, match="v1: 1 of the 12 values of its features"):
            f.features("v1")
    assert [(p.name, "NaN" in why) for p, why in check_tree(tmp_path)] == [("features.h5", True)]


def test_flow_images_round_trip_and_inputs_group_them_by_segment(tmp_path):
    faces = faces_shard(tmp_path / "faces.h5", videos=("a",), frames=5)
    with SegmentsFile.create(tmp_path / "segments.h5", {}) as s:
        s.write_video("a", np.array([[0, 1, 2, 3], [1, 2, 3, 4]]), 5)
    pairs = np.array([[0, 1], [1, 2], [2, 3], [3, 4]])
    flows = np.zeros((4, 16, 16, 2), np.float32)
    flows[..., 0] = np.arange(4)[:, None, None] * 0.5 - 1.0  # -1, -0.5, 0, 0.5 px
    with FlowFile.create(tmp_path / "flow.h5", {"bound": 2.0}) as f:
        f.write_video("a", pairs, flows, np.array([[0, 1, 2], [1, 2, 3]]))
    with FlowFile(tmp_path / "flow.h5") as f:
        np.testing.assert_allclose(f.flows("a")[..., 0], flows[..., 0], atol=2 * 2.0 / 255)
        assert f.images("a").dtype == np.uint8
    with InputSource("flow", [{"flow": tmp_path / "flow.h5"}]) as src:
        index = src.index("a")
        assert index.tolist() == [[0, 1, 2], [1, 2, 3]]
        items = src.items("a", index)
        assert items.shape == (2, 3, 16, 16, 3)
        np.testing.assert_allclose(dequantise(items[1, 0], 2.0)[..., 0], -0.5, atol=0.01)
        assert np.all(src.zero("a", index) == FLOW_ZERO)
    with InputSource("frames", [{"faces": faces, "segments": tmp_path / "segments.h5"}]) as src:
        assert src.items("a", src.index("a")).shape == (2, 4, 16, 16, 3)
        assert src.zero("a", src.index("a")) is None
    assert flow_image(np.zeros((1, 2, 2, 2)), 2.0)[0, 0, 0].tolist() == [128, 128, 0]


def test_dynamic_files_map_segments_to_images_and_record_the_flow_zero(tmp_path):
    with DynamicFile.create(tmp_path / "dyn.h5", {}) as f:
        f.write_video("a", np.zeros((2, 8, 8, 3), np.uint8), np.array([[0], [1], [1]]),
                      np.array([[0.25, 0.25], [0.75, 0.75]]))
    with InputSource("dynamic_flow", [{"dynamic": tmp_path / "dyn.h5"}]) as src:
        index = src.index("a")
        assert index.tolist() == [[0], [1], [1]]
        np.testing.assert_allclose(src.zero("a", index)[:, 0, 0], [0.25, 0.75, 0.75])
