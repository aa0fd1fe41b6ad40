"""Embedding files: .npz and Kaldi .ark/.scp round trips, validation and atomic writes."""
from __future__ import annotations

import numpy as np
import pytest

import voxprint.data.embeddings as embeddings_module
from voxprint.data.embeddings import load_embeddings, save_embeddings
from voxprint.errors import DataError


@pytest.fixture()
def table() -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(0)
    ids = [f"SPEAKER{i // 4:04d}-{i:06d}" for i in range(20)]
    return ids, rng.normal(size=(20, 16)).astype(np.float32)


@pytest.mark.parametrize("suffix", [".npz", ".ark"])
def test_round_trip(tmp_path, table, suffix):
    ids, matrix = table
    path = save_embeddings(tmp_path / "out" / f"emb{suffix}", ids, matrix.astype(np.float64))
    loaded_ids, loaded = load_embeddings(path)
    assert loaded_ids == ids
    assert loaded.dtype == np.float32 and loaded.shape == (20, 16)
    np.testing.assert_array_equal(loaded, matrix)
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_npz_layout(tmp_path, table):
    ids, matrix = table
    path = save_embeddings(tmp_path / "emb.npz", ids, matrix)
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["embeddings", "ids"]
        assert archive["ids"].dtype.kind == "U"
        assert archive["embeddings"].dtype == np.float32


def test_ark_has_scp_beside_it(tmp_path, table, monkeypatch):
    import kaldiio

    ids, matrix = table
    path = save_embeddings(tmp_path / "emb.ark", ids, matrix)
    scp = tmp_path / "emb.scp"
    lines = scp.read_text().splitlines()
    assert [ln.split()[0] for ln in lines] == ids
    assert all(ln.split()[1].startswith(str(path.resolve()) + ":") for ln in lines)
    # The scp is a valid Kaldi index, readable by kaldiio and by load_embeddings from any cwd.
    monkeypatch.chdir(tmp_path.parent)
    np.testing.assert_array_equal(kaldiio.load_scp(str(scp))[ids[3]], matrix[3])
    loaded_ids, loaded = load_embeddings(scp)
    assert loaded_ids == ids
    np.testing.assert_array_equal(loaded, matrix)


def test_missing_file_and_unknown_suffix(tmp_path, table):
    with pytest.raises(DataError, match="not found"):
        load_embeddings(tmp_path / "none.npz")
    with pytest.raises(DataError, match="suffix '.pt'"):
        load_embeddings(tmp_path / "emb.pt")
    with pytest.raises(DataError, match="suffix '.h5'"):
        save_embeddings(tmp_path / "emb.h5", *table)


def test_wrong_keys_and_corrupt_files(tmp_path):
    path = tmp_path / "emb.npz"
    np.savez(path, names=np.array(["a"]), vectors=np.ones((1, 2)))
    with pytest.raises(DataError, match="'ids' and 'embeddings', found names, vectors"):
        load_embeddings(path)
    np.savez(path, ids=np.array([1, 2]), embeddings=np.ones((2, 2)))
    with pytest.raises(DataError, match="'ids' must be a 1-D array of strings"):
        load_embeddings(path)
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_embeddings(path)
    ark = tmp_path / "emb.ark"
    ark.write_bytes(b"utt1 \x00Bgarbage")
    with pytest.raises(DataError, match="not a readable Kaldi .ark"):
        load_embeddings(ark)


def test_invalid_contents_on_load(tmp_path):
    path = tmp_path / "emb.npz"
    np.savez(path, ids=np.array(["a", "b", "a"]), embeddings=np.ones((3, 2), np.float32))
    with pytest.raises(DataError, match=r"1 id\(s\) occur more than once \('a'\)"):
        load_embeddings(path)
    np.savez(path, ids=np.array(["a", "b"]), embeddings=np.ones((3, 2), np.float32))
    with pytest.raises(DataError, match="2 ids but 3 embedding rows"):
        load_embeddings(path)
    np.savez(path, ids=np.array(["a", "b"]), embeddings=np.array([[1, 2], [np.nan, 0]], np.float32))
    with pytest.raises(DataError, match="NaN or infinity .*first row 1"):
        load_embeddings(path)


@pytest.mark.parametrize(
    ("ids", "matrix", "message"),
    [
        (["a", "b", "a"], np.ones((3, 4)), r"more than once \('a'\)"),
        (["a", "b"], np.ones((3, 4)), "2 ids but 3 embedding rows"),
        (["a", "b c"], np.ones((2, 4)), "whitespace"),
        (["a", ""], np.ones((2, 4)), "empty"),
        (["a"], np.ones(4), "2-D"),
        (["a", "b"], np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN or infinity"),
    ],
)
@pytest.mark.parametrize("suffix", [".npz", ".ark"])
def test_rejected_writes_leave_existing_file_untouched(tmp_path, table, ids, matrix, message, suffix):
    path = save_embeddings(tmp_path / f"emb{suffix}", *table)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(DataError, match=message):
        save_embeddings(path, ids, matrix)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_failure_during_write_leaves_existing_file_untouched(tmp_path, table, monkeypatch):
    path = save_embeddings(tmp_path / "emb.npz", *table)
    before = path.read_bytes()

    def broken_savez(file, **arrays):
        file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(embeddings_module.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save_embeddings(path, ["x"], np.ones((1, 3)))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["emb.npz"]  # temp file removed


def test_kaldi_text_ark_and_matrix_rows_are_read(tmp_path):
    import kaldiio

    path = tmp_path / "text.ark"
    kaldiio.save_ark(str(path), {"a": np.array([1.0, 2.0], np.float32),
                                 "b": np.array([[3.0, 4.0]], np.float32)}, text=True)
    ids, matrix = load_embeddings(path)
    assert ids == ["a", "b"]
    np.testing.assert_array_equal(matrix, [[1.0, 2.0], [3.0, 4.0]])


def test_ark_entries_that_are_not_vectors_are_refused(tmp_path):
    import kaldiio

    # A pickled entry would run code when unpickled; it must be refused, not loaded.
    path = tmp_path / "pickled.ark"
    kaldiio.save_ark(str(path), {"a": np.ones(3)}, write_function="pickle")
    with pytest.raises(DataError, match="'a' is not a Kaldi float vector"):
        load_embeddings(path)
    path = tmp_path / "mixed.ark"
    kaldiio.save_ark(str(path), {"a": np.ones(3, np.float32), "b": np.ones(4, np.float32)})
    with pytest.raises(DataError, match="'b' has dimension 4 but 'a' has 3"):
        load_embeddings(path)


def test_scp_lines_are_checked(tmp_path, table, monkeypatch):
    save_embeddings(tmp_path / "emb.ark", *table)
    scp = tmp_path / "bad.scp"
    scp.write_text(f"{table[0][0]} cat {tmp_path / 'emb.ark'} |\n")
    with pytest.raises(DataError, match="line 1: expected 'ID ARK_FILE:OFFSET'"):
        load_embeddings(scp)
    scp.write_text("x missing.ark:5\n")
    with pytest.raises(DataError, match="line 1: ark file not found: missing.ark"):
        load_embeddings(scp)
    # A relative ark path that does not resolve from the working folder is looked up beside
    # the scp, so a copied experiment folder still loads.
    offsets = [ln.split(":")[-1] for ln in (tmp_path / "emb.scp").read_text().splitlines()]
    scp.write_text("".join(f"{i} emb.ark:{o}\n" for i, o in zip(table[0], offsets)))
    monkeypatch.chdir("/")
    ids, matrix = load_embeddings(scp)
    assert ids == table[0]
    np.testing.assert_array_equal(matrix, table[1])


def test_npz_holding_a_single_array_is_refused(tmp_path):
    path = tmp_path / "emb.npz"
    with open(path, "wb") as fh:
        np.save(fh, np.ones((2, 3)))
    with pytest.raises(DataError, match="single array"):
        load_embeddings(path)
