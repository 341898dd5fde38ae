"""A VisualBERT checkpoint folder whose text side is a trained BERT (e.g. all-MiniLM-L6-v2), the rest random.

VisualBERT *is* BERT plus three visual parameters in its embeddings (a projection of the region features,
visual token-type and position embeddings) and a head. A folder made here loads like any checkpoint
(`vlexport build PATH`, transformers' `VisualBert*.from_pretrained`), so the precision gates (int8 above
all) meet a trained model's activation statistics — outlier channels, peaked attention — which random
weights never have. What is random is written in the folder's `vlexport_random_parts.json`.

    python -m vlexport.families.visual_bert.from_bert BERT_FOLDER OUT_FOLDER [--labels 3129]

numpy + safetensors only (no torch). The visual token-type and position embeddings start as copies of the
text ones, as the VisualBERT authors initialised them (HF's `special_visual_initialize`).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from vlexport.errors import ArtifactError, ConfigError

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
RANDOM_PARTS = "vlexport_random_parts.json"


def _bert_weights(folder: Path) -> tuple[dict, dict]:
    from safetensors.numpy import load_file

    cfg_path, weights = folder / "config.json", folder / "model.safetensors"
    for p in (cfg_path, weights):
        if not p.is_file():
            raise ArtifactError(f"'{folder}' is not a BERT checkpoint folder: '{p.name}' is missing")
    config = json.loads(cfg_path.read_text())
    if config.get("model_type") != "bert":
        raise ConfigError(f"'{folder}' holds a {config.get('model_type')!r} model; a BERT checkpoint is needed")
    state = load_file(str(weights))
    # BertModel saves bare keys; BertFor* heads save them under "bert."
    state = {k.removeprefix("bert."): v for k, v in state.items() if not k.startswith(("cls.", "classifier."))}
    state.pop("embeddings.position_ids", None)
    return config, state


def visualbert_from_bert(bert_folder, out_folder, architecture: str = "VisualBertForQuestionAnswering",
                         num_labels: int = 3129, visual_embedding_dim: int = 2048, seed: int = 0) -> Path:
    """Write a VisualBERT checkpoint folder: the BERT's weights on the text side, the rest random
    (normal(0, initializer_range), small non-zero biases). Returns the folder."""
    from safetensors.numpy import save_file

    bert_folder, out = Path(bert_folder), Path(out_folder)
    config, bert = _bert_weights(bert_folder)
    H, std = config["hidden_size"], config.get("initializer_range", 0.02)
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    state = {f"visual_bert.{k}": v.astype(np.float32) for k, v in bert.items()}
    emb = "visual_bert.embeddings."
    state[emb + "visual_token_type_embeddings.weight"] = state[emb + "token_type_embeddings.weight"].copy()
    state[emb + "visual_position_embeddings.weight"] = state[emb + "position_embeddings.weight"].copy()
    state[emb + "visual_projection.weight"] = normal(H, visual_embedding_dim)
    state[emb + "visual_projection.bias"] = normal(H)
    random_parts = [emb + "visual_projection"]
    if architecture in ("VisualBertForQuestionAnswering", "VisualBertForVisualReasoning"):
        state["cls.weight"], state["cls.bias"] = normal(num_labels, H), normal(num_labels)
        random_parts.append("cls")
    elif architecture != "VisualBertModel":
        raise ConfigError(f"from_bert makes VisualBertModel, VisualBertForQuestionAnswering or "
                          f"VisualBertForVisualReasoning folders; got {architecture!r}")

    keep = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
            "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id")
    vb = {"model_type": "visual_bert", "architectures": [architecture], "visual_embedding_dim": visual_embedding_dim,
          **{k: config[k] for k in keep if k in config}}
    if architecture != "VisualBertModel":
        vb["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_labels)}
        vb["label2id"] = {f"LABEL_{i}": i for i in range(num_labels)}
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(vb, indent=2) + "\n")
    for name in TOKENIZER_FILES:
        if (bert_folder / name).is_file():
            shutil.copyfile(bert_folder / name, out / name)
    (out / RANDOM_PARTS).write_text(json.dumps({"text_side_from": str(bert_folder), "random": random_parts,
                                                "seed": seed}, indent=2) + "\n")
    return out


def fit_answer_head(folder, seed: int = 0, draws: int = 16, steps: int = 300) -> dict:
    """Replace a question-answering folder's random head by a linear probe trained on the embedded corpus:
    each corpus question is its own answer class (the other labels keep their small random rows), fitted by
    softmax regression on the model's own hidden states for that question over several detector-like
    feature draws. A random head over 3129 labels gives near-tied logits (top-1 then measures ties, not
    precision); a trained head is confident where its inputs are, as a real VQA head is. Needs torch.
    Returns {"classes", "train_accuracy", "mean_top2_gap"}."""
    import torch
    from safetensors.numpy import load_file, save_file

    from vlexport import calibration
    from vlexport.families.visual_bert.processor import VisualBertProcessor
    from vlexport.reference import from_pretrained

    folder = Path(folder)
    loaded = from_pretrained(str(folder))
    model, config = loaded.model.eval(), loaded.config
    proc = VisualBertProcessor.from_pretrained(folder)
    questions = calibration.texts("questions")
    rng = np.random.default_rng(seed)
    feats, labels = [], []
    with torch.no_grad():
        for _ in range(draws):
            enc = proc(questions, visual_embeds=list(calibration.detector_features(
                rng, (len(questions), 36), config.visual_embedding_dim)))
            out = model.visual_bert(**{k: torch.from_numpy(np.asarray(v)) for k, v in enc.items()})
            index = torch.from_numpy(np.asarray(enc["attention_mask"]).sum(1) - 2)
            feats.append(out.last_hidden_state[torch.arange(len(questions)), index].numpy())
            labels.append(np.arange(len(questions)))
    x, y = np.concatenate(feats), np.concatenate(labels)
    state = load_file(str(folder / "model.safetensors"))
    w, b = state["cls.weight"].copy(), state["cls.bias"].copy()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    wq = torch.zeros(len(questions), x.shape[1], requires_grad=True)
    bq = torch.zeros(len(questions), requires_grad=True)
    opt = torch.optim.Adam([wq, bq], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ wq.T + bq, yt) + 1e-3 * (wq ** 2).sum()
        loss.backward()
        opt.step()
    w[: len(questions)], b[: len(questions)] = wq.detach().numpy(), bq.detach().numpy()
    state["cls.weight"], state["cls.bias"] = w, b
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    logits = x @ w.T + b
    top2 = np.sort(logits, axis=1)[:, -2:]
    facts = {"classes": len(questions), "train_accuracy": float((logits.argmax(1) == y).mean()),
             "mean_top2_gap": float((top2[:, 1] - top2[:, 0]).mean())}
    parts_file = folder / RANDOM_PARTS
    parts = json.loads(parts_file.read_text())
    parts["random"] = [p for p in parts["random"] if p != "cls"]
    parts["cls"] = {"fitted_on": "the embedded corpus' questions (one class each)", **facts}
    parts_file.write_text(json.dumps(parts, indent=2) + "\n")
    return facts


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bert", help="a BERT checkpoint folder (config.json + model.safetensors)")
    p.add_argument("out", help="the VisualBERT folder to write")
    p.add_argument("--labels", type=int, default=3129, help="answer classes of the random VQA head")
    p.add_argument("--visual-dim", type=int, default=2048, help="region feature size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fit-head", action="store_true", help="train the answer head as a linear probe on the "
                   "embedded corpus (needs torch) instead of leaving it random")
    a = p.parse_args(argv)
    out = visualbert_from_bert(a.bert, a.out, num_labels=a.labels, visual_embedding_dim=a.visual_dim, seed=a.seed)
    if a.fit_head:
        print(fit_answer_head(out, seed=a.seed))
    print(out)


if __name__ == "__main__":
    main()
