"""`attncore view`: the HTML page (text round trip, self-contained, rendered by headless Chromium) and
the PNG heatmaps (size, content) of stores with known scores."""

from __future__ import annotations

import html.parser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from attncore.alignment import decode
from attncore.critical import CriticalConfig, alignment_hash, find_critical_units
from attncore.errors import UserError
from attncore.steps import StepSegmenterConfig, segment_response, sentence_spans
from attncore.store.config import TextFormat
from attncore.store.store import AttentionStore, ExampleMatrices, RolloutScores, store_meta
from attncore.store.view import write_view
from attncore.synthetic.config import SyntheticConfig
from attncore.synthetic.dataset import generate_examples
from attncore.think import THINK_OPEN_LINE
from attncore.tiny import train_tokenizer

HEADS = ((0, 0), (0, 1), (1, 0), (1, 1))
MODEL = {"name": "tiny", "revision": None, "dtype": "float32"}
INPUTS = {"count": 2, "sha256": "0" * 64}
RED, BLUE = (215, 48, 31), (33, 102, 172)  # the page's colours at 8x above / below uniform
CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def trace():
    [example] = generate_examples(SyntheticConfig(count=1, seed=11, problem={"difficulty": (3, 3)}))
    return example


@pytest.fixture(scope="module")
def attnpo_store(tmp_path_factory, trace) -> tuple[AttentionStore, RolloutScores]:
    """A rollout whose step 0 scores 8x the uniform reference for every head and step 1 scores 1/8x."""
    tok = train_tokenizer()
    ids = tok(trace.trace.text[len(THINK_OPEN_LINE) :], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    segmented = segment_response(tok, ids)
    assert segmented.ok and len(segmented.steps) >= 4
    prompt = 40
    answer = len(ids) - segmented.think_end[1]
    uniform = answer / (prompt + len(ids))
    ratios = torch.ones(len(HEADS), len(segmented.steps))
    ratios[:, 0], ratios[:, 1] = 8.0, 1 / 8
    ratios[:, 2:] += torch.linspace(0, 1, len(HEADS))[:, None]
    text = decode(tok, ids)
    scored = RolloutScores(
        "gsm/1#0",
        "gsm/1",
        "ok",
        None,
        prompt,
        len(ids),
        answer,
        True,
        text,
        segmented.steps,
        HEADS,
        ratios * uniform,
    )
    skipped = RolloutScores("gsm/2#0", "gsm/2", "skipped", "no_think_end", 30, 12, 0, None, "no think")
    root = tmp_path_factory.mktemp("attnpo-store")
    meta = store_meta("attnpo", MODEL, StepSegmenterConfig(), INPUTS, heads=list(HEADS))
    AttentionStore.create(root, meta, "rank0").append([scored, skipped])
    return AttentionStore.open(root), scored


@pytest.fixture(scope="module")
def molsaki_store(tmp_path_factory, trace) -> tuple[AttentionStore, ExampleMatrices]:
    critical = CriticalConfig()
    text, border = TextFormat().render(trace.problem.text, trace.trace.text)
    spans = tuple(sentence_spans(text, [(0, border), (border, len(text))]))
    units = tuple(find_critical_units(text, critical))
    matrices = torch.rand(3, len(spans), len(units), generator=torch.Generator().manual_seed(0))
    example = ExampleMatrices(
        trace.id,
        "ok",
        None,
        text,
        border,
        0,
        500,
        spans,
        tuple((i, i + 1) for i in range(len(spans))),
        units,
        tuple((i,) for i in range(len(units))),
        alignment_hash(text, spans, units, critical),
        matrices,
    )
    root = tmp_path_factory.mktemp("molsaki-store")
    meta = store_meta("molsaki", MODEL, TextFormat(), INPUTS, layers=3, critical=critical)
    AttentionStore.create(root, meta, "rank0").append([example])
    return AttentionStore.open(root), example


class _TextOf(html.parser.HTMLParser):
    """Text inside `<div id="text">`, and the tags met there."""

    def __init__(self):
        super().__init__()
        self.depth, self.text, self.tags = 0, [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if self.depth:
            self.depth += 1
            self.tags.append((tag, attrs))
        elif attrs.get("id") == "text":
            self.depth = 1

    def handle_endtag(self, tag):
        if self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if self.depth:
            self.text.append(data)


def parse_text(page: str) -> _TextOf:
    parser = _TextOf()
    parser.feed(page)
    return parser


def assert_png(path: Path, width: int, height: int) -> np.ndarray:
    image = imread(path)
    assert image.shape[:2] == (height, width), path
    rgb = (image[..., :3] * 255).round().astype(int)
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 20, "not a blank image"
    return rgb


def has_colour(rgb: np.ndarray, colour: tuple[int, int, int], tol: int = 6, count: int = 100) -> bool:
    return int((np.abs(rgb - np.array(colour)).max(-1) <= tol).sum()) >= count


def test_attnpo_page_and_step_by_head_heatmap(attnpo_store, tmp_path):
    store, scored = attnpo_store
    page, png = write_view(store, "gsm/1#0", tmp_path, size=(900, 600))
    assert (page.name, png.name) == ("gsm_1_0.html", "gsm_1_0.heads.png")
    rgb = assert_png(png, 900, 600)
    darkest_red, darkest_blue = (103, 0, 31), (5, 48, 97)  # RdBu_r at +3 and -3
    assert has_colour(rgb, darkest_red) and has_colour(rgb, darkest_blue), "steps 0 and 1 saturate the scale"

    content = page.read_text()
    parsed = parse_text(content)
    assert "".join(parsed.text) == scored.text, "the page shows the decoded response exactly"
    steps = [attrs for tag, attrs in parsed.tags if attrs.get("class") == "step"]
    assert [a["id"] for a in steps] == [f"step-{k}" for k in range(len(scored.steps))]
    assert content.count("<option ") == 1 + len(HEADS) and "mean of 4 heads" in content
    assert f"{scored.uniform_score:.3e}" in content
    assert "http://" not in content and "https://" not in content and " src=" not in content


def test_molsaki_page_and_step_by_unit_heatmaps(molsaki_store, tmp_path):
    store, example = molsaki_store
    paths = write_view(store, example.example_id, tmp_path, layers=[0, 2], size=(640, 480))
    assert [p.name for p in paths] == [
        "synthetic_0.html",
        "synthetic_0.units-mean.png",
        "synthetic_0.units-L0.png",
        "synthetic_0.units-L2.png",
    ]
    images = [assert_png(p, 640, 480) for p in paths[1:]]
    assert not np.array_equal(images[1], images[2]), "each layer draws its own matrix"
    parsed = parse_text(paths[0].read_text())
    assert "".join(parsed.text) == example.text
    marks = [attrs["data-unit"] for tag, attrs in parsed.tags if tag == "mark"]
    assert sorted(set(marks), key=int) == [str(c) for c in range(len(example.units))]


def test_view_errors(attnpo_store, molsaki_store, tmp_path):
    store, _ = attnpo_store
    with pytest.raises(UserError, match=r"rollout 'gsm/2#0' has no scores \(skipped: no_think_end\)"):
        write_view(store, "gsm/2#0", tmp_path)
    with pytest.raises(UserError, match="has no rollout 'gsm/9#0'"):
        write_view(store, "gsm/9#0", tmp_path)
    with pytest.raises(UserError, match="--layer applies to MoLSAKI stores"):
        write_view(store, "gsm/1#0", tmp_path, layers=[1])
    with pytest.raises(UserError, match=r"layers \[3\] are outside the store's 3 layers"):
        write_view(molsaki_store[0], molsaki_store[1].example_id, tmp_path, layers=[3])
    with pytest.raises(UserError, match="too small"):
        write_view(store, "gsm/1#0", tmp_path, size=(100, 100))


def step_colour(dom: str, k: int) -> str:
    """The background colour the page's script gave step k."""
    match = re.search(rf'<span class="step" id="step-{k}"[^>]*?style="background-color: (rgb\([^)]*\))', dom)
    assert match, f"step {k} was not painted"
    return match.group(1)


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
    ]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed")
def test_pages_render_in_headless_chromium(attnpo_store, molsaki_store, tmp_path):
    """The script runs (every step gets its colour, step 0 the saturated red, step 1 the blue) and the
    screenshot shows them."""
    store, scored = attnpo_store
    page, _ = write_view(store, "gsm/1#0", tmp_path / "attnpo")
    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-painted="mean"' in dom.stdout
    assert dom.stdout.count('style="background-color: rgb(') == len(scored.steps)
    assert step_colour(dom.stdout, 0) == "rgb({}, {}, {})".format(*RED)
    assert step_colour(dom.stdout, 1) == "rgb({}, {}, {})".format(*BLUE)

    shot = tmp_path / "attnpo.png"
    run = chromium(
        f"--screenshot={shot}", "--window-size=1000,900", page.as_uri(), profile=tmp_path / "profile"
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rgb = assert_png(shot, 1000, 900)
    assert has_colour(rgb, RED, tol=3) and has_colour(rgb, BLUE, tol=3), "painted steps are on screen"

    example = molsaki_store[1]
    [page, *_] = write_view(molsaki_store[0], example.example_id, tmp_path / "molsaki")
    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile")
    assert 'data-painted="mean"' in dom.stdout
    assert dom.stdout.count('class="step" id="step-') == len(example.step_spans)
    assert dom.stdout.count('class="unit" data-unit=') >= len(example.units)
    assert dom.stdout.count("background-color: rgb(") >= len(example.step_spans) + len(example.units)


@pytest.mark.slow
def test_view_command(attnpo_store, tmp_path):
    store, _ = attnpo_store
    args = [
        "view",
        "--store",
        str(store.root),
        "--rollout",
        "gsm/1#0",
        "--out",
        str(tmp_path),
        "--width",
        "700",
    ]
    run = subprocess.run([sys.executable, "-m", "attncore", *args], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [str(tmp_path / "gsm_1_0.html"), str(tmp_path / "gsm_1_0.heads.png")]
    assert_png(tmp_path / "gsm_1_0.heads.png", 700, 800)
