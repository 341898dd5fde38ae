"""Make `tiny-llama-tokenizer.json`: a small Llama-2-style tokenizer for the tiny VipLlava model.

    python vlexport/data/make_tiny_llama_tokenizer.py           # (re)write the json beside this script
    python vlexport/data/make_tiny_llama_tokenizer.py --check   # exit 1 when the committed json differs

What it is: a byte-fallback BPE in the shape of Llama-2's tokenizer.json on the hub (the one
llava-hf/vip-llava-7b-hf ships, and what transformers 5 loads for a `vipllava` model: its AutoTokenizer
forces `TokenizersBackend` for that model type, i.e. the tokenizer.json as it is):

- normalizer `Sequence([Prepend("▁"), Replace(" ", "▁")])`, no pre-tokenizer (so every piece of text
  between two special tokens gets its own "▁" in front, Llama-2's "legacy" behaviour; transformers 5's
  `LlamaTokenizer` class, used when no model type says otherwise, rebuilds this as
  `Metaspace(prepend_scheme="first")`: vlexport.families.vip_llava.processor does the same);
- model BPE with `byte_fallback=True`, `fuse_unk=True`, unk `<unk>`;
- ids as Llama-2's: `<unk>`=0, `<s>`=1, `</s>`=2 (special added tokens), the 256 byte tokens
  `<0x00>`..`<0xFF>` = 3..258 (plain vocabulary entries, as in Llama-2), then the learned pieces;
- post-processor `TemplateProcessing("<s> $A", pair "<s> $A <s> $B")` (Llama-2's add_bos_token);
- decoder `Replace("▁", " "), ByteFallback, Fuse, Strip(" ", 1, 0)`;
- then, as llava-hf's conversion of ViP-LLaVA adds them after Llama's 32000 pieces, the special added
  tokens `<image>` (id 1000 here, 32000 in vip-llava-7b-hf) and `<pad>` (1001 here, 32001 there).

How: the pieces are learned by `tokenizers`' BpeTrainer (a fixed corpus, a fixed vocabulary size,
no dropout) over the English corpus below, written for this project (our own text, free to
redistribute): sentences about images, colours, shapes, boxes, people and objects, the ViP-LLaVA chat
prompt, and its visual-prompt vocabulary. Words are pre-split for training only (Metaspace with
split=True, punctuation isolated, digits one by one, newlines left to the byte tokens), so pieces
never span words, like SentencePiece's in Llama-2; the saved pipeline does not split, as Llama-2's.
The json is tokenizers' own serialization (vocabulary in id order), and the training is
deterministic, so re-running the script reproduces the committed file byte for byte
(tests/test_vip_llava_processor.py checks it, and `--check` does).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

OUT = Path(__file__).with_name("tiny-llama-tokenizer.json")
BASE_VOCAB_SIZE = 1000  # <unk>, <s>, </s>, 256 byte tokens, then learned pieces; <image>, <pad> follow
SPECIALS = ("<unk>", "<s>", "</s>")
ADDED = ("<image>", "<pad>")

_COLOURS = ["red", "green", "blue", "yellow", "black", "white", "orange", "purple", "pink", "brown", "gray"]
_SHAPES = ["box", "circle", "ellipse", "arrow", "square", "triangle", "line", "scribble", "rectangle", "point"]
_PEOPLE = ["man", "woman", "child", "boy", "girl", "person", "player", "astronaut", "cook", "driver"]
_OBJECTS = ["cat", "dog", "cup", "car", "bus", "table", "chair", "ball", "book", "phone", "rocket", "tree",
            "bottle", "plate", "horse", "bird", "kite", "bike", "clock", "window", "door", "hat", "bag", "lamp"]
_PLACES = ["on the table", "in the street", "near the window", "under the tree", "in the kitchen",
           "on the grass", "at the beach", "in the sky", "on the road", "in the room"]
_VERBS = ["holds", "looks at", "points to", "sits next to", "stands behind", "walks toward", "carries", "touches"]

PROMPT = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the human's questions.###Human: \n{}###Assistant:")

_FIXED = [
    "The image shows a small cat sitting on a wooden table.",
    "A red box is drawn around the dog in the picture.",
    "What is inside the green circle?",
    "The object marked by the blue arrow is a coffee cup.",
    "Two people are standing in front of a white wall.",
    "The astronaut wears a white suit and holds a helmet.",
    "There are three shapes: a square, a triangle and a circle.",
    "Describe the region within the yellow rectangle.",
    "The photo was taken at night, so the colours are dark.",
    "A rocket stands on the launch pad under a clear sky.",
    "The cup of coffee is brown and the saucer is white.",
    "How many objects are in the purple ellipse?",
    "The scribble covers the left side of the image.",
    "Is the person in the red box smiling?",
    "The arrow points from the tree to the car.",
    "What colour is the object pointed to by the arrow?",
    "A boy and a girl play with a ball in the park.",
    "The picture is 336 pixels wide and 336 pixels high.",
    "The box starts at 40, 40 and ends at 200, 180.",
    "Please answer the question about the marked region.",
    "The woman on the left is reading a book.",
    "Bright light falls through the open window.",
    "The bounding box is tight around the bottle.",
    "A gray cat sleeps on an orange pillow.",
    "The model sees the visual prompt and answers.",
    "Each image is resized, cropped and normalized.",
    "The assistant gives helpful, detailed, and polite answers.",
    "It's a sunny day and the sky is blue.",
    "The child's kite is high above the trees.",
    "Zoom in on the top right corner of the photo.",
    "Count the people wearing hats: one, two, three, four, five.",
    "The shapes are drawn with thick lines of one colour.",
    "Yes, the object in the circle is a phone.",
    "No, there is nothing inside the green box.",
    "The chelsea cat has stripes and long whiskers.",
    "An ellipse is an oval shape; a circle is round.",
    "The dog is between the chair and the door.",
    "Which person is closest to the camera?",
    "The large bus is yellow with black windows.",
    "A plate of food sits next to a glass of water.",
    "Several colourful umbrellas shelter the market stalls from the rain.",
    "A fisherman repairs his nets beside a weathered blue boat.",
    "Snow covers the mountains behind the quiet village.",
    "The museum displays ancient pottery behind thick glass.",
    "Firefighters climb a tall ladder toward the smoking balcony.",
    "A teenager skateboards down a concrete ramp at sunset.",
    "Fresh vegetables, carrots and tomatoes, fill a wicker basket.",
    "The violinist practises quietly in an empty concert hall.",
    "Pigeons gather around a bench where an elderly gentleman feeds them.",
    "A bright kitchen with marble counters and copper pans.",
    "The giraffe stretches its neck to reach the highest leaves.",
    "Children build a sandcastle while waves approach the shore.",
    "A laptop, a notebook and a pencil lie on the desk.",
    "Traffic lights glow amber above the crowded intersection.",
    "The farmer drives a tractor across the golden wheat field.",
    "A lighthouse stands alone on the rocky cliff.",
    "Two zebras drink from a muddy river in the savanna.",
    "The bakery window shows croissants, muffins and cakes.",
    "A surfer rides a huge wave near the pier.",
    "Lanterns hang across the narrow alley during the festival.",
    "The referee raises a yellow card during the football match.",
    "A squirrel hides an acorn beneath the fallen leaves.",
    "Students listen carefully while the professor writes equations.",
    "An airplane leaves a white trail across the evening sky.",
    "The gardener trims hedges shaped like animals.",
    "A mechanic inspects the engine of a vintage motorcycle.",
    "Rain drips from the edge of a striped awning.",
    "The elephant sprays water over its dusty back.",
    "A toddler reaches for a balloon floating away.",
    "Sunflowers face the morning light in a sunny meadow.",
    "The chef sprinkles herbs over a steaming bowl of soup.",
    "A cyclist waits patiently at the railway crossing.",
    "Shadows stretch long across the empty parking lot.",
    "The photographer adjusts the tripod for a panoramic view.",
    "A penguin waddles across the icy rocks.",
    "Graffiti decorates the wall beneath the bridge.",
    "The waiter balances three plates on one arm.",
    "Hikers rest on a wooden bridge above the waterfall.",
    "A jellyfish glows faintly in the dark aquarium tank.",
    "The carpenter measures a plank before cutting it.",
    "Autumn leaves swirl across the cobblestone square.",
    "A robot vacuum cleaner bumps into the sofa.",
    "Musicians perform jazz on a small outdoor stage.",
    "The tennis player serves the ball with great speed.",
    "A monkey swings from vine to vine in the jungle.",
    "Candles flicker on a birthday cake with chocolate icing.",
    "Passengers board the train with heavy suitcases.",
    "The painter mixes crimson, turquoise and violet on a palette.",
    "A swan glides across the calm lake at dawn.",
]


def corpus() -> list[str]:
    """The training sentences, always the same list in the same order (a few hundred)."""
    lines = list(_FIXED)
    lines += [PROMPT.format(q) for q in ("What is in the box?", "Describe the image.", "What colour is it?")]
    for colour, shape in itertools.product(_COLOURS, _SHAPES):
        lines.append(f"What is within the {colour} {shape}?")
    for i, (person, verb) in enumerate(itertools.product(_PEOPLE, _VERBS)):
        obj, place = _OBJECTS[i % len(_OBJECTS)], _PLACES[i % len(_PLACES)]
        lines.append(f"The {person} {verb} the {obj} {place}.")
    for i, obj in enumerate(_OBJECTS):
        colour, shape = _COLOURS[i % len(_COLOURS)], _SHAPES[i % len(_SHAPES)]
        lines.append(f"The {obj} is marked with a {colour} {shape} in the image.")
        lines.append(f"A {_COLOURS[(i + 3) % len(_COLOURS)]} {obj} is {_PLACES[(i + 5) % len(_PLACES)]}.")
    for n in range(0, 400, 7):
        lines.append(f"box:{n},{n + 10},{n + 120},{n + 90} marks region {n // 7}.")
    return lines


def build():
    """The tokenizers.Tokenizer described in the module docstring (trained here, in memory)."""
    from tokenizers import (AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors,
                            trainers)

    specials_and_bytes = len(SPECIALS) + 256
    learner = Tokenizer(models.BPE())
    # training only: words (and punctuation runs, single digits) apart, as SentencePiece splits them
    learner.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        pre_tokenizers.Punctuation(behavior="isolated"), pre_tokenizers.Digits(individual_digits=True)])
    trainer = trainers.BpeTrainer(vocab_size=BASE_VOCAB_SIZE - specials_and_bytes, min_frequency=1,
                                  special_tokens=[], limit_alphabet=1000, show_progress=False)
    # newlines stay out of the pieces: "\n" is the byte token <0x0A>, as in Llama-2
    learner.train_from_iterator([line.replace("\n", " ") for line in corpus()], trainer=trainer)
    learned = sorted(learner.get_vocab().items(), key=lambda kv: kv[1])  # trainer order: alphabet, then merges
    merges = json.loads(learner.to_str())["model"]["merges"]

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    vocab.update({f"<0x{b:02X}>": len(SPECIALS) + b for b in range(256)})
    for token, _ in learned:
        if token not in vocab:
            vocab[token] = len(vocab)
    if len(vocab) != BASE_VOCAB_SIZE:
        raise SystemExit(f"the corpus gave {len(vocab)} pieces, not {BASE_VOCAB_SIZE}: lengthen the corpus")

    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m) for m in merges], unk_token="<unk>",
                               fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(content=" ", left=1, right=0)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS + ADDED])
    tok.post_processor = processors.TemplateProcessing(single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1",
                                                       special_tokens=[("<s>", 1)])
    return tok


def to_json() -> str:
    """The file's exact text."""
    return build().to_str(pretty=True) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare with the committed file instead of writing it")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    text = to_json()
    if args.check:
        same = args.out.is_file() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'up to date' if same else 'DIFFERS from what this script makes'}")
        return 0 if same else 1
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(text.encode())} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
