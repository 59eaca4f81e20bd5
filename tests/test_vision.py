"""Images as sources: reading and normalising, the image encoder, manifests and their errors,
and a small glyph corpus learned end to end (train, evaluate, transcribe)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from heedful.config import load_config
from heedful.errors import ConfigError, DataError
from heedful.manifest import read_manifest
from heedful.nn.architectures import Frontend, build_model, model_config
from heedful.presets import get_preset
from heedful.vision.encoder import ImageEncoder
from heedful.vision.images import collate, normalise, read_image
from heedful.vision.synthetic import write_glyph_corpus

# ---------------------------------------------------------------------- reading images


def test_normalise_scales_inverts_and_pads_to_the_encoder_stride() -> None:
    page = np.full((64, 50), 255, dtype=np.uint8)
    page[10:20, 5:9] = 0  # ink
    out = normalise(page, 32)
    assert out.shape == (32, 28)  # 50 * 32 / 64 = 25 -> padded to a multiple of 4
    assert out.dtype == np.uint8
    assert out[:, 25:].max() == 0  # the padding is background
    assert out[0, 0] == 0 and out[7, 3] > 200  # background 0, ink high


def test_transparent_png_is_composited_onto_white(tmp_path: Path) -> None:
    rgba = np.zeros((16, 8, 4), dtype=np.uint8)  # fully transparent black...
    rgba[4:8, 2:4] = (0, 0, 0, 255)  # ...but for an opaque black stroke
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png", 16)
    assert out[0, 0] == 0 and out[5, 2] == 255


@pytest.mark.parametrize(("kind", "message"), [
    ("text", "not an image Pillow can read"),
    ("truncated", "corrupt or unreadable image"),
])
def test_bad_image_files_are_named(tmp_path: Path, kind: str, message: str) -> None:
    path = tmp_path / "bad.png"
    if kind == "text":
        path.write_bytes(b"not an image at all")
    else:  # a real PNG cut in half
        noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
        Image.fromarray(noise).save(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=message) as err:
        read_image(path, 32, "train.tsv line 7")
    assert "train.tsv line 7" in str(err.value) and str(path) in str(err.value)
    with pytest.raises(DataError, match="file not found"):
        read_image(tmp_path / "missing.png", 32)


# ---------------------------------------------------------------------- the encoder


def test_encoder_memory_mask_and_slot_boxes() -> None:
    enc = ImageEncoder(32, 24, (4, 4, 8, 8), dropout=0.0).eval()
    images = torch.randint(0, 256, (2, 1, 32, 40), dtype=torch.uint8)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 20:] = False
    memory, slots = enc(images, mask)
    assert memory.shape == (2, 20, 24)  # (32 / 16) rows x (40 / 4) columns
    assert slots.sum(1).tolist() == [20, 10]
    assert slots[1, :10].all() and not slots[1, 10:].any()  # column-major: a prefix
    boxes = enc.slot_boxes(40)
    assert boxes.shape == (20, 4)
    assert boxes[0].tolist() == [0, 0, 4, 16] and boxes[1].tolist() == [0, 16, 4, 32]
    assert boxes[-1].tolist() == [36, 16, 40, 32]


@pytest.mark.parametrize(("arch", "position"), [("rnn", "embeddings"),
                                                ("transformer", "embeddings"),
                                                ("rnn", "row_encoder")])
def test_a_padded_batch_of_images_equals_each_alone(arch: str, position: str) -> None:
    torch.manual_seed(0)
    extra = {"attention": "multihead", "attention_heads": 2, "ff_dim": 64} \
        if arch == "transformer" else {}
    model = build_model(model_config(arch=arch, embed_dim=32, hidden_dim=32,
                                     image_channels=(4, 8, 8, 16), image_position=position,
                                     **extra), 8, 8,
                        frontend=Frontend("image", 32)).eval()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, w), dtype=np.uint8) for w in (48, 20, 32)]
    src, mask = collate(images)
    tgt = torch.tensor([[2, 5, 6], [2, 4, 4], [2, 7, 5]])
    with torch.inference_mode():
        batch_logits, batch_attn, _ = model.decode(
            tgt, model.init_state(model.encode(src, mask)), need_weights=True)
        for row, image in enumerate(images):
            s, m = collate([image])
            logits, attn, _ = model.decode(tgt[row:row + 1],
                                           model.init_state(model.encode(s, m)), True)
            torch.testing.assert_close(logits[0], batch_logits[row], atol=1e-5, rtol=1e-4)
            slots = attn.size(-1)
            torch.testing.assert_close(attn[0], batch_attn[row, ..., :slots], atol=1e-5,
                                       rtol=1e-4)
            assert float(batch_attn[row, ..., slots:].abs().sum()) < 1e-6  # padding gets none


# ---------------------------------------------------------------------- manifests


@pytest.mark.parametrize(("line", "message"), [
    ("images/a.png", "found no tab"),
    ("\tdigits", "the file path (before the tab) is empty"),
    ("images/a.png\t  ", "the target text (after the tab) is empty"),
    ("images/missing.png\t42", "file not found"),
    ("images\t42", "is a directory, not a file"),
])
def test_manifest_errors_name_the_manifest_and_line(tmp_path: Path, line: str,
                                                    message: str) -> None:
    (tmp_path / "images").mkdir()
    Image.new("L", (8, 16), 255).save(tmp_path / "images" / "a.png")
    manifest = tmp_path / "train.tsv"
    manifest.write_text(f"images/a.png\t1\n\n{line}\n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(message)) as err:
        read_manifest(manifest)
    assert f"{manifest} line 3" in str(err.value)


def test_a_corrupt_image_in_training_data_names_the_manifest_line(tmp_path: Path) -> None:
    from heedful.sources import reader_for
    from heedful.vision.data import prepare_image_data

    data = write_glyph_corpus(tmp_path / "data", {"train": 3, "dev": 2})
    (data / "images" / "train" / "00001.png").write_bytes(b"garbage")
    cfg = load_config(None, [f"data.dir={data}", "data.image_height=16"],
                      base=get_preset("image-digits"))
    with pytest.raises(DataError, match=r"train\.tsv line 2: .*00001\.png: not an image"):
        prepare_image_data(cfg, tmp_path / "run", reader_for(cfg))


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.dir=null"], "data.source: image needs data.dir"),
    (["data.dataset=bible-es-en"], "set data.dataset: null"),
    (["tokenizer.joint=false"], "keep tokenizer.joint: true"),
    (["data.image_height=40"], "multiple of 16"),
])
def test_image_config_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides, base=get_preset("image-digits"))


def test_image_sources_need_an_architecture_with_an_image_encoder() -> None:
    with pytest.raises(ConfigError, match="needs model.arch rnn or transformer"):
        load_config(None, ["data.dataset=null", "data.source=image", "data.dir=x",
                           "model.arch=conv"])


def test_image_options_are_refused_for_text_sources() -> None:
    with pytest.raises(ConfigError, match="data.dir applies only to data.source: image"):
        load_config(None, ["data.dir=x"])
    with pytest.raises(ConfigError, match="early_stopping_metric: cer"):
        load_config(None, ["train.early_stopping_metric=cer"])
    with pytest.raises(ConfigError, match="model.image_channels applies only"):
        load_config(None, ["model.image_channels=[8,8,8,8]"])
    with pytest.raises(ConfigError, match="model.image_position applies only"):
        load_config(None, ["model.image_position=row_encoder"])


# ---------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def glyph_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small model trained on glyph strings until it reads them (about 10 s)."""
    from heedful.training.trainer import train

    root = tmp_path_factory.mktemp("glyphs")
    data = write_glyph_corpus(root / "data", {"train": 600, "dev": 60, "test": 60},
                              max_length=3)
    cfg = load_config(None, [
        f"data.dir={data}", "data.image_height=16", "model.embed_dim=64",
        "model.hidden_dim=64", "model.image_channels=[8,16,16,32]", "model.dropout=0",
        "train.batch_tokens=600", "train.max_steps=160", "train.valid_every=40",
        "train.lr=0.005", "train.warmup_steps=20", "train.threads=1",
        "train.schedule=constant", "data.augment=null"],
        base=get_preset("image-digits"))
    train(cfg, root / "run")
    return root / "run", data


def test_glyph_strings_are_learned_to_exact_match(glyph_run: tuple[Path, Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from heedful.cli import main

    run, _ = glyph_run
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("dev_cer" in r for r in records)
    assert main(["evaluate", str(run), "--split", "test", "--json", "--by-length"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["exact_match"] >= 0.99 and report["cer"] <= 0.01
    assert [row["length"] for row in report["by_length"]] == [1, 2, 3]


def test_transcribe_writes_one_line_per_input(glyph_run: tuple[Path, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from heedful.cli import main

    run, data = glyph_run
    entries = read_manifest(data / "test.tsv")[:3]
    listing = tmp_path / "list.txt"
    listing.write_text(f"{entries[0].path}\n\n{tmp_path / 'missing.png'}\n{entries[1].path}\n",
                       encoding="utf-8")
    out = tmp_path / "out.txt"
    assert main(["transcribe", str(run), "-i", str(listing), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"heedful: error: {listing}, line 3: {tmp_path / 'missing.png'}: file not found" in err
    assert out.read_text().split("\n") == [entries[0].target, "", ""]  # the lines before it
    assert main(["transcribe", str(run), "-i", str(listing), "--skip-bad-lines",
                 "-o", str(out)]) == 0
    assert f"warning: {listing}, line 3" in capsys.readouterr().err
    assert out.read_text().split("\n") == [entries[0].target, "", "", entries[1].target, ""]
    # a line that is not UTF-8 stops the run after the paths before it were transcribed
    listing.write_bytes(f"{entries[0].path}\n\n".encode() + b"\x80abc\n"
                        + f"{entries[1].path}\n".encode())
    assert main(["transcribe", str(run), "-i", str(listing), "-o", str(out)]) == 2
    assert f"{listing}, line 3: invalid UTF-8" in capsys.readouterr().err
    assert out.read_text().split("\n") == [entries[0].target, "", ""]
    assert main(["transcribe", str(run), str(entries[2].path), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["text"] == entries[2].target and record["file"] == str(entries[2].path)


def test_the_python_api_reads_arrays_with_attention_over_slots(
        glyph_run: tuple[Path, Path]) -> None:
    from heedful import Translator
    from heedful.decoding.transcriber import Transcriber

    run, data = glyph_run
    entry = read_manifest(data / "test.tsv")[0]
    transcriber = Translator.from_checkpoint(run)
    assert isinstance(transcriber, Transcriber)
    page = np.asarray(Image.open(entry.path))
    result = transcriber.transcribe([page], return_attention=True)[0]
    assert result.text == entry.target
    assert result.attention is not None and result.boxes is not None
    assert result.attention.shape[-1] == len(result.boxes) == len(result.src_pieces)
    assert result.size == (page.shape[1], page.shape[0])
    assert result.boxes[:, 2].max() <= page.shape[1]


def test_the_shipped_digit_reader_reads_its_samples(capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    from heedful.cli import main
    from heedful.decoding.translator import SHIPPED_MODELS_DIR

    samples = sorted((SHIPPED_MODELS_DIR / "digits-ocr" / "samples").glob("*.png"))
    assert len(samples) == 3
    assert main(["transcribe", "digits-ocr", *map(str, samples)]) == 0
    assert capsys.readouterr().out.split() == ["3331891727", "0893", "4219"]


@pytest.mark.parametrize("command", [
    ["score", "--src", "{text}", "--tgt", "{text}"],
    ["align", "--src", "{text}", "--tgt", "{text}"],
    ["chat"],
])
def test_text_commands_refuse_an_image_model_by_name(tmp_path: Path, capsys,
                                                     command: list[str]) -> None:
    from heedful.cli import main

    text = tmp_path / "lines.txt"
    text.write_text("12\n", encoding="utf-8")
    argv = [command[0], "digits-ocr", *(a.format(text=text) for a in command[1:])]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"heedful: error: {command[0]} needs a model that reads text; digits-ocr reads " \
           "images (data.source: image)" in err


# ---------------------------------------------------------------------- serving


def _b64(path: Path) -> str:
    import base64

    return base64.b64encode(path.read_bytes()).decode()


def test_http_transcribe_and_its_errors(glyph_run: tuple[Path, Path]) -> None:
    from fastapi.testclient import TestClient

    from heedful import Translator
    from heedful.serving.server import ServeSettings, create_app

    run, data = glyph_run
    entries = read_manifest(data / "test.tsv")[:2]
    app = create_app({"glyphs": Translator.from_checkpoint(run)},
                     ServeSettings(max_image_bytes=20_000))
    with TestClient(app) as client:
        assert client.get("/models").json()[0]["source"] == "image"
        r = client.post("/transcribe", json={"images": [_b64(e.path) for e in entries],
                                             "return_attention": True, "beam_size": 2})
        assert r.status_code == 200, r.text
        out = r.json()["transcriptions"]
        assert [t["text"] for t in out] == [e.target for e in entries]
        attention = out[0]["attention"]
        assert len(attention["weights"][0][0][0]) == len(attention["boxes"])
        assert out[0]["size"] == list(Image.open(entries[0].path).size)
        assert "/transcribe" in client.get("/openapi.json").json()["paths"]
        for body, status, message in [
            ({"images": ["%%%"]}, 422, "images.0: not valid base64"),
            ({"images": ["aGVsbG8="]}, 422, "images.0: not an image"),
            ({"images": ["A" * 40_000]}, 413, "images.0: about 30,000 bytes"),
            ({"images": []}, 422, "images"),
            ({"texts": ["x"]}, 422, "texts"),
        ]:
            r = client.post("/transcribe", json=body)
            assert r.status_code == status and message in r.json()["detail"], r.text
        r = client.post("/translate", json={"texts": ["/etc/passwd"]})
        assert r.status_code == 422 and "POST /transcribe" in r.json()["detail"]


CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (apt-get install -y chromium)")
def test_browser_transcribes_an_image_and_lights_its_regions(glyph_run: tuple[Path, Path],
                                                            live_server) -> None:
    from heedful import Translator
    from heedful.serving.server import create_app

    playwright = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    run, data = glyph_run
    entry = read_manifest(data / "test.tsv")[0]
    app = create_app({"glyphs": Translator.from_checkpoint(run)})
    with live_server(app) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('go').textContent === 'Transcribe'")
        page.set_input_files("#file", str(entry.path))
        page.wait_for_function("document.getElementById('translation').textContent"
                               ".length > 0")
        assert page.text_content("#translation") == entry.target
        page.hover("#chars span >> nth=0")
        assert int(page.get_attribute("#picture", "data-lit") or 0) >= 1
        browser.close()


# ---------------------------------------------------------------------- on a GPU


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_an_image_model_trains_and_transcribes_on_cuda(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    from heedful import Translator
    from heedful.cli import main

    data = write_glyph_corpus(tmp_path / "data", {"train": 120, "dev": 8, "test": 8})
    run = tmp_path / "run"
    assert main(["train", "--preset", "image-digits", f"data.dir={data}",
                 "data.image_height=16", "train.max_steps=20", "train.valid_every=20",
                 "train.device=cuda", "train.tf32=false", "--run-dir", str(run),
                 "--no-progress"]) == 0
    cpu = Translator.from_checkpoint(run, device="cpu")
    gpu = Translator.from_checkpoint(run, device="cuda")
    images = [cpu.reader.read(e.path) for e in read_manifest(data / "test.tsv")]
    src, mask = collate(images)
    tgt = torch.full((len(images), 3), 2)
    with torch.inference_mode():
        expected = cpu.model(src, mask, tgt)
        got = gpu.model(src.cuda(), mask.cuda(), tgt.cuda()).cpu()
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    capsys.readouterr()
    paths = [str(e.path) for e in read_manifest(data / "test.tsv")]
    assert main(["transcribe", str(run), *paths, "--device", "cuda"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(paths)
