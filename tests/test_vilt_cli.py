"""`vlexport predict` for ViLT artifacts, as a user runs it: a photo and a question (top answers with
sigmoid scores), captions ranked against one image (retrieval), a text with [MASK] filled (MLM);
bad images and texts give one line."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from vlexport.families.vilt.checkpoints import TINY_ID, TINY_LABELS


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "vlexport", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, timeout=timeout)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    from PIL import Image

    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("img") / "photo.jpg"
    Image.fromarray(rng.integers(0, 255, size=(300, 420, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, tiny_artifacts):
    cache = {"visual-question-answering": tiny_artifacts[TINY_ID]}  # the session's shared build (read-only)

    def get(task):
        if task not in cache:
            out = tmp_path_factory.mktemp("vilt-cli") / task
            proc = run_cli("build", "--model", TINY_ID, "--task", task, "--out", out, "--quiet")
            assert proc.returncode == 0, proc.stderr[-3000:]
            cache[task] = out
        return cache[task]

    return get


def test_question_answering(artifacts, photo):
    out = artifacts("visual-question-answering")
    proc = run_cli("predict", out, "--image", photo, "--text", "How many cats are there?", "is it red?",
                   "--top-k", "3")
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(r"│\s*(\S+)\s*│\s*(0\.\d{4})\s*│", proc.stdout)
    assert len(rows) == 6 and all(label in TINY_LABELS for label, _ in rows)
    assert "How many cats are there?" in " ".join(proc.stdout.split()) and "onnxruntime" in proc.stderr


def test_retrieval_ranks_every_caption(artifacts, photo):
    out = artifacts("image-text-retrieval")
    captions = ["a cat on a sofa", "two dogs", "a red car", "a bowl of soup", "people in a park"]
    proc = run_cli("predict", out, "--image", photo, "--text", *captions, "--top-k", "5")
    assert proc.returncode == 0, proc.stderr
    ranked = re.findall(r"│\s*([a-z ]+?)\s*│\s*(-?\d+\.\d{4})\s*│", proc.stdout)
    assert sorted(c for c, _ in ranked) == sorted(captions)
    scores = [float(s) for _, s in ranked]
    assert scores == sorted(scores, reverse=True)


def test_masked_lm_fills_the_mask(artifacts, photo):
    out = artifacts("fill-mask")
    proc = run_cli("predict", out, "--image", photo, "--text", "a [MASK] on a table", "--top-k", "4")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"│\s*2\s*│\s*\S+(, \S+){3}\s*│", proc.stdout), proc.stdout  # position 2: after [CLS] a
    proc = run_cli("predict", out, "--image", photo, "--text", "no mask here")
    assert proc.returncode == 2 and "has no [MASK]" in proc.stderr


def test_bad_images_and_texts_are_one_line(artifacts, photo, tmp_path):
    out = artifacts("visual-question-answering")
    (tmp_path / "fake.jpg").write_text("not an image")
    for args, match in ((["--image", tmp_path / "fake.jpg", "--text", "what?"], "fake.jpg"),
                        (["--image", tmp_path / "missing.jpg", "--text", "what?"], "missing.jpg"),
                        (["--text", "what?"], "--image is required"),
                        (["--image", photo, "--text", ""], "must not be empty")):
        proc = run_cli("predict", out, *args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert lines[0].startswith("vlexport predict: error: ") and match in lines[0], lines[0]


def test_nlvr2_compares_two_images(tmp_path, photo):
    """NLVR2 (two images per statement): `predict --image a.jpg b.jpg --text ...` prints True/False
    probabilities equal to the pipeline's softmax; one image is a one-line error."""
    from PIL import Image

    import vlexport
    from oracle import save_hf_model
    from vilt_kit import NLVR2, make_hf_model
    from vlexport.processing.bert_text import BertTextProcessor
    from vlexport.processing.vocab import tiny_vocab

    hf = make_hf_model(NLVR2, vocab_size=len(tiny_vocab()))
    folder = save_hf_model(hf, tmp_path / "nlvr2")
    BertTextProcessor.tiny().save_pretrained(folder)  # the model's vocabulary
    from vlexport.families.vilt.image_processor import ViltImageProcessor

    ViltImageProcessor(size={"shortest_edge": 64}).save_pretrained(folder)  # the kit's 64-pixel images
    out = tmp_path / "art"
    proc = run_cli("build", "--model", folder, "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    other = tmp_path / "other.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (200, 260, 3), dtype=np.uint8)).save(other)
    text = "the left image has more cats"
    proc = run_cli("predict", out, "--image", photo, other, "--text", text)
    assert proc.returncode == 0, proc.stderr
    printed = dict(re.findall(r"│\s*(\S+)\s*│\s*(0\.\d{4})\s*│", proc.stdout))
    model = vlexport.load(out)
    enc = model.processor(images=[str(photo), str(other)], text=[text], images_per_text=2)
    logits = model(**enc).logits[0].astype(np.float64)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    labels = model.id2label or {0: "False", 1: "True"}
    assert printed == {labels[i]: f"{p[i]:.4f}" for i in range(len(p))}
    proc = run_cli("predict", out, "--image", photo, "--text", text)
    assert proc.returncode == 2 and "2 images" in proc.stderr and "Traceback" not in proc.stderr
