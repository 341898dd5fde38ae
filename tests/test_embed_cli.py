"""`vlexport embed`: many real files (skimage photos and synthetic images written with Pillow, plus a
truncated JPEG, a text file named .jpg and an empty file) through `vlexport.cli.main`, against the
pipeline's own `embed_images` / `embed_texts`; the sidecar, skipped inputs, atomic outputs, user
mistakes (exit 2, one stderr line) and an artifact of another family."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vlexport
from vlexport.cli import main

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def artifact(tiny_artifacts):
    return tiny_artifacts["tiny-dual-encoder"]  # the session's shared build (read-only)


@pytest.fixture(scope="module")
def pipe(artifact):
    return vlexport.load(artifact)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder tree of images: (root, good files in the command's order, bad files)."""
    root = tmp_path_factory.mktemp("photos")
    (root / "b_sub" / "deeper").mkdir(parents=True)
    (root / "a_sub").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(skimage_data.astronaut()).save(root / "astronaut.jpg", quality=90)
    Image.fromarray(skimage_data.coffee()).save(root / "coffee.PNG")
    Image.fromarray(skimage_data.chelsea()).save(root / "b_sub" / "chelsea.jpeg")
    Image.fromarray(skimage_data.camera()).save(root / "b_sub" / "deeper" / "camera.png")  # grayscale
    Image.fromarray(rng.integers(0, 256, (40, 60, 4), dtype=np.uint8), "RGBA").save(root / "a_sub" / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (33, 17, 3), dtype=np.uint8)).save(root / "a_sub" / "noise.bmp")
    Image.fromarray(rng.integers(0, 256, (50, 50), dtype=np.uint8)).convert("P").save(root / "a_sub" / "pal.gif")
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(root / "b_sub" / "s.tiff")
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(root / "b_sub" / "w.webp")
    for i in range(5):
        Image.fromarray(np.full((16 + i, 20, 3), 40 * i, np.uint8)).save(root / f"flat{i}.png")
    # bad ones
    full = (root / "astronaut.jpg").read_bytes()
    (root / "b_sub" / "truncated.jpg").write_bytes(full[: len(full) // 3])
    (root / "notes.jpg").write_text("this is not a picture\n")
    (root / "a_sub" / "empty.png").write_bytes(b"")
    (root / "readme.txt").write_text("ignored: not an image extension\n")
    (root / "b_sub" / "labels.csv").write_text("a,b\n")

    def order(paths):
        return sorted(paths, key=lambda p: Path(p).relative_to(root).parts)

    everything = order(str(p) for p in root.rglob("*") if p.is_file() and p.suffix.lower() not in (".txt", ".csv"))
    bad = {str(root / "b_sub" / "truncated.jpg"), str(root / "notes.jpg"), str(root / "a_sub" / "empty.png")}
    return root, [p for p in everything if p not in bad], bad


def run(capsys, *argv):
    capsys.readouterr()
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def sidecar(out: Path) -> dict:
    return json.loads(out.with_suffix(".json").read_text())


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name or p.name.endswith(".tmp"))


def one_line_error(code, err, match):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, (code, err)
    assert lines[0].startswith("vlexport embed: error: "), lines[0]
    assert re.search(match, lines[0]), lines[0]
    return lines[0]


# ----------------------------------------------------------------------------- the main path

def test_directory_with_bad_files(capsys, artifact, pipe, photos, tmp_path):
    root, good, bad = photos
    out = tmp_path / "vectors.npy"
    code, stdout, stderr = run(capsys, "embed", artifact, "--images", root, "--out", out, "--batch-size", 4)
    assert code == 0, stderr
    vectors = np.load(out)
    assert vectors.dtype == np.float32 and vectors.shape == (len(good), pipe.embed_images(good[:1]).shape[1])
    np.testing.assert_allclose(vectors, pipe.embed_images(good), atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    meta = sidecar(out)
    assert [r["source"] for r in meta["rows"]] == good
    assert [r["row"] for r in meta["rows"]] == list(range(len(good)))
    assert {s["source"] for s in meta["skipped"]} == bad and all(s["error"] for s in meta["skipped"])
    assert meta["kind"] == "images" and meta["normalized"] is True and meta["dim"] == vectors.shape[1]
    assert meta["count"] == len(good) and meta["dtype"] == "float32"
    assert meta["artifact"] == str(Path(artifact).absolute())
    assert meta["precision"] == "fp32" and meta["backend"] == "onnxruntime"
    # each bad file: one stderr line naming it; nothing else on stderr (no bar off a terminal)
    skipped = [line for line in stderr.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == len(stderr.strip().splitlines()) == len(bad), stderr
    assert {line.split(": ", 1)[0][len("skipped "):] for line in skipped} == bad
    assert any("truncated" in line and "decoded" in line for line in skipped), skipped
    assert f"skipped {root / 'a_sub' / 'empty.png'}: an empty file (0 bytes)" in skipped
    # one summary line: rows, skipped, seconds, rate, both paths
    (summary,) = stdout.strip().splitlines()
    assert re.search(rf"embedded {len(good)} images .*skipped 3, in [\d.]+ s \([\d.]+ rows/s\)", summary), summary
    assert str(out) in summary and str(out.with_suffix(".json")) in summary
    assert leftovers(tmp_path) == []


def test_batch_size_does_not_change_vectors(capsys, artifact, photos, tmp_path):
    root, good, _ = photos
    got = {}
    for bs in (1, 7, 1000):  # 1000: capped at the artifact's largest batch
        out = tmp_path / f"bs{bs}.npy"
        code, _, err = run(capsys, "embed", artifact, "--images", root, "--out", out, "--batch-size", bs, "--quiet")
        assert code == 0, err
        got[bs] = np.load(out)
        assert [r["source"] for r in sidecar(out)["rows"]] == good
    np.testing.assert_allclose(got[1], got[7], atol=1e-6, rtol=0)
    np.testing.assert_allclose(got[1], got[1000], atol=1e-6, rtol=0)
    assert sidecar(tmp_path / "bs1000.npy")["batch_size"] <= 32


def test_rows_go_to_disk_batch_by_batch(capsys, artifact, pipe, photos, tmp_path, monkeypatch):
    """Bounded memory: the pipeline never sees more than --batch-size inputs at once, and the rows of
    the batches done so far are already in the temporary file beside --out when the next one runs."""
    root, good, _ = photos
    cls = type(pipe)
    real = cls.embed_images
    seen = []

    def spy(self, images, batch_size=32, normalize=True):
        tmp = [p for p in tmp_path.iterdir() if p.name.startswith(".vectors.npy.partial-")]
        assert len(tmp) == 1
        seen.append((len(images), tmp[0].stat().st_size))
        return real(self, images, batch_size=batch_size, normalize=normalize)

    monkeypatch.setattr(cls, "embed_images", spy)
    code, _, err = run(capsys, "embed", artifact, "--images", *good, "--out", tmp_path / "vectors.npy",
                       "--batch-size", 3)
    assert code == 0, err
    assert [n for n, _ in seen] == [3] * (len(good) // 3) + ([len(good) % 3] if len(good) % 3 else [])
    dim = np.load(tmp_path / "vectors.npy").shape[1]
    sizes = [size for _, size in seen]
    assert sizes == [128 + 3 * i * dim * 4 for i in range(len(seen))]  # header + the rows of earlier batches


def test_glob_and_several_inputs(capsys, artifact, pipe, photos, tmp_path):
    root, good, _ = photos
    out = tmp_path / "g.npy"
    # top-level PNGs only (any case is what the pattern says: the pattern is the filter)
    code, _, err = run(capsys, "embed", artifact, "--images", str(root / "*.png"), "--out", out)
    assert code == 0, err
    want = sorted(str(p) for p in root.glob("*.png"))
    assert [r["source"] for r in sidecar(out)["rows"]] == want
    np.testing.assert_allclose(np.load(out), pipe.embed_images(want), atol=1e-6, rtol=0)
    # ** recursion, then a directory naming some of the same files again: each file once, first order kept
    out2 = tmp_path / "g2.npy"
    code, _, err = run(capsys, "embed", artifact, "--images", str(root / "**" / "*.jpeg"), root / "a_sub",
                       str(root / "b_sub" / "*.jpeg"), "--out", out2)
    assert code == 0, err
    a_sub = [p for p in good if Path(p).parent == root / "a_sub"]
    assert [r["source"] for r in sidecar(out2)["rows"]] == [str(root / "b_sub" / "chelsea.jpeg"), *a_sub]
    assert [s["source"] for s in sidecar(out2)["skipped"]] == [str(root / "a_sub" / "empty.png")]


def test_no_normalize(capsys, artifact, pipe, photos, tmp_path):
    root, good, _ = photos
    out = tmp_path / "raw.npy"
    code, _, err = run(capsys, "embed", artifact, "--images", root, "--out", out, "--no-normalize", "--quiet")
    assert code == 0, err
    raw = np.load(out)
    np.testing.assert_allclose(raw, pipe.embed_images(good, normalize=False), atol=1e-6, rtol=0)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1)
    assert sidecar(out)["normalized"] is False


def test_texts(capsys, artifact, pipe, tmp_path):
    texts = tmp_path / "captions.txt"
    lines = ["a photo of a cat", "", "a dog on the beach", "   ", "astronaut in a white suit",
             "\u00e9t\u00e9 \u00e0 Paris \u2014 caf\u00e9", "x" * 500]
    texts.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\n\xff\xfe broken\n\n")
    out = tmp_path / "t.npy"
    code, stdout, err = run(capsys, "embed", artifact, "--texts", texts, "--out", out, "--batch-size", 2)
    assert code == 0, err
    keep = [(i + 1, t) for i, t in enumerate(lines) if t.strip()]
    vectors = np.load(out)
    np.testing.assert_allclose(vectors, pipe.embed_texts([t for _, t in keep]), atol=1e-6, rtol=0)
    meta = sidecar(out)
    assert meta["kind"] == "texts"
    assert [r["source"] for r in meta["rows"]] == [f"{texts}:{n}" for n, _ in keep]
    assert meta["skipped"] == [{"source": f"{texts}:8", "error": meta["skipped"][0]["error"]}]
    assert "UTF-8" in meta["skipped"][0]["error"] and f"skipped {texts}:8: " in err
    assert f"embedded {len(keep)} texts" in stdout


# ----------------------------------------------------------------------------- outputs refused

def test_refuses_to_overwrite(capsys, artifact, photos, tmp_path):
    root, _, _ = photos
    out = tmp_path / "vectors.npy"
    out.write_bytes(b"precious")
    code, _, err = run(capsys, "embed", artifact, "--images", root, "--out", out)
    one_line_error(code, err, r"vectors\.npy' exists; pass --overwrite")
    assert out.read_bytes() == b"precious" and not out.with_suffix(".json").exists()
    out.unlink()
    out.with_suffix(".json").write_text("{}")  # the sidecar alone is protected too
    code, _, err = run(capsys, "embed", artifact, "--images", root, "--out", out)
    one_line_error(code, err, r"vectors\.json' exists; pass --overwrite")
    assert not out.exists()
    code, _, err = run(capsys, "embed", artifact, "--images", root, "--out", out, "--overwrite", "--quiet")
    assert code == 0, err
    assert sidecar(out)["kind"] == "images" and len(np.load(out)) == sidecar(out)["count"]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("make,match", [
    (lambda d: d, r"is a directory"),
    (lambda d: d / "vectors.txt", r"must end in \.npy"),
    (lambda d: (d / "file").write_text("x") and d / "file" / "v.npy", r"is a file, not a folder"),
])
def test_bad_out(capsys, artifact, photos, tmp_path, make, match):
    (tmp_path / "d").mkdir()
    out = make(tmp_path / "d")
    code, _, err = run(capsys, "embed", artifact, "--images", photos[0], "--out", out)
    one_line_error(code, err, match)
    assert leftovers(tmp_path / "d") == []


def test_inputs_refused(capsys, artifact, photos, tmp_path):
    root, _, _ = photos
    out = tmp_path / "v.npy"
    cases = [
        (["--images", str(root / "*.nothing")], r"'.*\*\.nothing' matches no files"),
        (["--images", root, str(tmp_path / "missing-dir")], r"missing-dir': no such file or directory"),
        (["--images", tmp_path], r"holds no image files"),
        (["--texts", tmp_path / "missing.txt"], r"missing\.txt': no such file"),
        (["--images", root, "--texts", tmp_path / "t.txt"], r"exactly one of --images"),
        ([], r"exactly one of --images"),
        (["--images", root, "--batch-size", "0"], r"--batch-size must be a positive integer"),
    ]
    (tmp_path / "blank.txt").write_text("\n  \n\n")
    cases.append((["--texts", tmp_path / "blank.txt"], r"every line is blank"))
    for args, match in cases:
        code, _, err = run(capsys, "embed", artifact, *args, "--out", out)
        one_line_error(code, err, match)
    code, _, err = run(capsys, "embed", artifact, "--images", root)
    one_line_error(code, err, r"--out is required")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blank.txt"]


def test_every_input_bad(capsys, artifact, photos, tmp_path):
    _, _, bad = photos
    out = tmp_path / "v.npy"
    code, _, err = run(capsys, "embed", artifact, "--images", *sorted(bad), "--out", out)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == len(bad) + 1, err
    assert all(line.startswith("skipped ") for line in lines[:-1])
    assert re.match(r"vlexport embed: error: none of the 3 images could be embedded", lines[-1]), lines[-1]
    assert list(tmp_path.iterdir()) == []


def test_other_family(capsys, photos, tmp_path_factory, tiny_artifacts):
    vqa = tiny_artifacts["tiny-visualbert-vqa"]
    out = tmp_path_factory.mktemp("o") / "v.npy"
    code, _, err = run(capsys, "embed", vqa, "--images", photos[0], "--out", out)
    one_line_error(code, err, r"visual_bert artifact .*this artifact's pipeline \(\w+\) does not embed images")
    assert not out.exists() and leftovers(out.parent) == []


# ----------------------------------------------------------------------------- atomicity

def test_failed_run_leaves_nothing(capsys, artifact, pipe, photos, tmp_path, monkeypatch):
    """Interrupted (Ctrl-C) or crashed after some batches were already on disk: no vectors.npy, no
    sidecar, no temporary file; an existing output is left as it was."""
    root, good, _ = photos
    cls = type(pipe)
    real = cls.embed_images
    calls = []

    def failing(exc):
        def embed_images(self, images, batch_size=32, normalize=True):
            calls.append(len(images))
            if len(calls) == 3:
                raise exc
            return real(self, images, batch_size=batch_size, normalize=normalize)
        return embed_images

    out = tmp_path / "vectors.npy"
    monkeypatch.setattr(cls, "embed_images", failing(KeyboardInterrupt()))
    code, _, err = run(capsys, "embed", artifact, "--images", *good, "--out", out, "--batch-size", 2)
    assert code == 130 and "interrupted" in err
    assert list(tmp_path.iterdir()) == []

    out.write_bytes(b"old")
    calls.clear()
    monkeypatch.setattr(cls, "embed_images", failing(RuntimeError("backend crashed")))
    with pytest.raises(RuntimeError, match="backend crashed"):
        main([str(a) for a in ("embed", artifact, "--images", *good, "--out", out, "--batch-size", 2, "--overwrite")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectors.npy"] and out.read_bytes() == b"old"


def test_stale_temp_files_of_dead_runs_are_removed(capsys, artifact, photos, tmp_path):
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(proc.stdout)
    stale = tmp_path / f".vectors.npy.partial-{dead}-abc.tmp"
    stale.write_bytes(b"half")
    live = tmp_path / f".vectors.npy.partial-{os.getppid()}-abc.tmp"  # a run still going: not ours to remove
    live.write_bytes(b"busy")
    other = tmp_path / f".other.npy.partial-{dead}-abc.tmp"  # another destination: untouched
    other.write_bytes(b"x")
    code, _, err = run(capsys, "embed", artifact, "--images", photos[0], "--out", tmp_path / "vectors.npy", "--quiet")
    assert code == 0, err
    assert not stale.exists() and live.exists() and other.exists()
    assert leftovers(tmp_path) == sorted([live.name, other.name])
