"""Audio as a source: WAV reading and its errors, log-mel features against librosa, the
audio encoder's subsampling and masks, SpecAugment, the spoken-digits corpus, and a small
synthetic task learned end to end (train, evaluate, transcribe)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from heedful.audio.data import AudioReader, SpecAugmenter, collate_features
from heedful.audio.encoder import AudioEncoder, subsampled_lengths
from heedful.audio.features import AudioConfig, LogMel, mel_filterbank, read_wav
from heedful.audio.synthetic import write_tone_corpus
from heedful.config import load_config
from heedful.errors import ConfigError, DataError
from heedful.nn.architectures import Frontend, build_model, model_config
from heedful.presets import get_preset

FSDD_SAMPLE = Path(__file__).resolve().parent.parent / "heedful" / "datasets" / "fsdd_sample"

# ---------------------------------------------------------------------- features


@pytest.mark.parametrize(("rate", "n_fft", "n_mels"), [(16000, 400, 80), (8000, 200, 40)])
def test_mel_filterbank_equals_librosa(rate: int, n_fft: int, n_mels: int) -> None:
    librosa = pytest.importorskip("librosa")
    ours = mel_filterbank(rate, n_fft, n_mels)
    reference = librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=n_mels)
    np.testing.assert_allclose(ours, reference, atol=1e-7)


def test_mel_power_of_a_known_signal_equals_librosa() -> None:
    librosa = pytest.importorskip("librosa")
    cfg = AudioConfig(sample_rate=16000, n_mels=80)
    t = np.arange(16000) / 16000
    signal = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t)
              ).astype(np.float32)
    ours = LogMel(cfg).power_mel(signal).numpy()
    reference = librosa.feature.melspectrogram(
        y=signal, sr=16000, n_fft=400, hop_length=160, window="hann", center=True,
        pad_mode="constant", power=2.0, n_mels=80).T
    assert ours.shape == reference.shape == (101, 80)
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-3 * reference.max())
    # the 440 Hz tone's energy sits in the band whose filter peaks nearest 440 Hz
    peaks = mel_filterbank(16000, 400, 80).argmax(1) * 16000 / 400
    assert abs(peaks[ours[50].argmax()] - 440) < 60


def test_features_are_normalised_per_utterance() -> None:
    rng = np.random.default_rng(0)
    loud = rng.normal(0, 0.5, 8000).astype(np.float32)
    feats = LogMel(AudioConfig(sample_rate=8000, n_mels=40))(loud)
    assert feats.shape == (101, 40)  # 1 s, a frame every 10 ms
    np.testing.assert_allclose(feats.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(feats.std(0), 1, atol=1e-2)
    quiet = LogMel(AudioConfig(sample_rate=8000, n_mels=40))(loud * 0.1)
    np.testing.assert_allclose(quiet, feats, atol=0.05)  # loudness is normalised away


# ---------------------------------------------------------------------- reading and errors


def _wav(path: Path, samples: np.ndarray, rate: int = 8000, **kwargs: str) -> Path:
    sf.write(path, samples, rate, **kwargs)
    return path


@pytest.mark.parametrize(("kind", "message"), [
    ("missing", "file not found"),
    ("directory", "is a directory, not a file"),
    ("empty", "the recording is empty"),
    ("corrupt", "not a readable WAV file"),
    ("flac", "not a WAV file"),
    ("adpcm", "WAV sample format IMA_ADPCM"),
])
def test_bad_audio_files_are_named(tmp_path: Path, kind: str, message: str) -> None:
    path = tmp_path / f"{kind}.wav"
    tone = np.sin(np.arange(800) / 5).astype(np.float32) * 0.3
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        _wav(path, np.zeros(0, np.float32), subtype="PCM_16")
    elif kind == "corrupt":
        path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(64)))
    elif kind == "flac":
        _wav(path, tone, format="FLAC")
    elif kind == "adpcm":
        _wav(path, tone, subtype="IMA_ADPCM")
    with pytest.raises(DataError, match=message) as err:
        read_wav(path, where=f"train.tsv, line 3: {path.name}")
    assert str(err.value).startswith(f"train.tsv, line 3: {path.name}: ")


def test_stereo_is_mixed_and_other_rates_resampled(tmp_path: Path) -> None:
    t = np.arange(16000) / 16000
    tone = np.sin(2 * np.pi * 500 * t).astype(np.float32) * 0.4
    path = _wav(tmp_path / "stereo.wav", np.stack([tone, tone], 1), rate=16000)
    samples, rate = read_wav(path)
    assert rate == 16000 and samples.shape == (16000,)
    reader = AudioReader(AudioConfig(sample_rate=8000, n_mels=40))
    assert reader.read(path).shape == (101, 40)  # 1 s at 8 kHz, a frame every 10 ms
    with pytest.raises(DataError, match="expected a non-empty 1-D array"):
        reader.read(np.zeros((3, 3), np.float32))
    blip = _wav(tmp_path / "blip.wav", np.zeros((3, 2), np.float32), rate=96000)
    with pytest.raises(DataError, match=r"blip\.wav: too short \(3 samples at 96000 Hz leave "
                                        r"none at 8000 Hz\)"):
        reader.read(blip)


# ---------------------------------------------------------------------- the encoder


def test_subsampling_lengths_masks_and_spans() -> None:
    enc = AudioEncoder(40, 32, 8, dropout=0.0).eval()
    feats = torch.randn(3, 50, 40)
    mask = torch.ones(3, 50, dtype=torch.bool)
    mask[1, 33:] = False
    mask[2, 5:] = False
    memory, slots = enc(feats, mask)
    assert memory.shape == (3, 13, 32)
    assert slots.sum(1).tolist() == [13, 9, 2] == subsampled_lengths(
        torch.tensor([50, 33, 5])).tolist()
    assert slots[1, :9].all() and not slots[1, 9:].any()
    assert float(memory[1, 9:].abs().sum()) == 0.0
    spans = AudioEncoder.slot_spans_of(33, 0.01)
    assert spans.shape == (9, 2)
    np.testing.assert_allclose(spans[0], [0.0, 0.04])
    np.testing.assert_allclose(spans[-1], [0.32, 0.33])


@pytest.mark.parametrize("arch", ["rnn", "transformer"])
def test_a_padded_batch_of_utterances_equals_each_alone(arch: str) -> None:
    torch.manual_seed(0)
    extra = {"attention": "multihead", "attention_heads": 2, "ff_dim": 64} \
        if arch == "transformer" else {}
    model = build_model(model_config(arch=arch, embed_dim=32, hidden_dim=32,
                                     audio_channels=8, **extra), 8, 8,
                        frontend=Frontend("audio", 40)).eval()
    rng = np.random.default_rng(0)
    utterances = [rng.normal(size=(t, 40)).astype(np.float32) for t in (61, 23, 40)]
    src, mask = collate_features(utterances)
    tgt = torch.tensor([[2, 5, 6], [2, 4, 4], [2, 7, 5]])
    with torch.inference_mode():
        batch_logits, batch_attn, _ = model.decode(
            tgt, model.init_state(model.encode(src, mask)), need_weights=True)
        for row, feats in enumerate(utterances):
            s, m = collate_features([feats])
            logits, attn, _ = model.decode(tgt[row:row + 1],
                                           model.init_state(model.encode(s, m)), True)
            torch.testing.assert_close(logits[0], batch_logits[row], atol=1e-5, rtol=1e-4)
            slots = attn.size(-1)
            torch.testing.assert_close(attn[0], batch_attn[row, ..., :slots], atol=1e-5,
                                       rtol=1e-4)
            assert float(batch_attn[row, ..., slots:].abs().sum()) < 1e-6


def test_spec_augment_masks_deterministically() -> None:
    cfg = AudioConfig(time_masks=2, time_mask_frames=10, freq_masks=2, freq_mask_bands=6)
    feats = [np.ones((100, 40), np.float32), np.ones((60, 40), np.float32)]
    augment = SpecAugmenter(cfg)
    a, b, c = augment(feats, 1), augment(feats, 1), augment(feats, 2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    for masked, original in zip(a, feats, strict=True):
        assert masked.shape == original.shape and (masked == 0).any()
        assert (original == 1).all()  # the stored features are not touched
        # at most 2 x 10 frames and 2 x 6 bands masked
        assert (masked == 0).all(1).sum() <= 20 and (masked == 0).all(0).sum() <= 12



def test_speed_and_vocal_tract_perturbation() -> None:
    from heedful.audio.data import warp_axis

    ramp = np.tile(np.arange(100, dtype=np.float32)[:, None], (1, 40))  # frame i holds i
    assert np.array_equal(warp_axis(ramp, 1.0, axis=0, keep_length=False), ramp)
    faster = warp_axis(ramp, 1.25, axis=0, keep_length=False)  # 25% faster: 80 frames
    assert faster.shape == (80, 40) and faster[40, 0] == pytest.approx(50.0)
    bands = np.tile(np.arange(40, dtype=np.float32), (10, 1))
    warped = warp_axis(bands, 0.9, axis=1, keep_length=True)  # a longer vocal tract
    assert warped.shape == bands.shape and warped[0, 10] == pytest.approx(9.0)
    assert warped[0, -1] == pytest.approx(35.1)
    cfg = AudioConfig(speed_perturb=0.1, vtlp=0.1)
    augment = SpecAugmenter(cfg)
    assert SpecAugmenter.wanted(cfg)
    feats = [np.random.default_rng(0).normal(size=(200, 40)).astype(np.float16)]
    a, b = augment(feats, 3), augment(feats, 3)
    assert np.array_equal(a[0], b[0]) and a[0].dtype == np.float32
    lengths = {augment(feats, seed)[0].shape[0] for seed in range(20)}
    assert len(lengths) > 5 and min(lengths) >= 181 and max(lengths) <= 223  # 200 / [1.1, 0.9]


# ---------------------------------------------------------------------- config


def test_audio_config_errors() -> None:
    with pytest.raises(ConfigError, match="data.audio applies only to data.source: audio"):
        load_config(None, ["data.audio.n_mels=40"])
    with pytest.raises(ConfigError, match=r"data\.audio\.sample_rate"):
        load_config(None, ["data.audio.sample_rate=100"], base=get_preset("speech-digits"))
    with pytest.raises(ConfigError, match="data.augment applies only to data.source: image"):
        load_config(None, ["data.augment.warp=1"], base=get_preset("speech-digits"))


# ---------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tone_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small model trained on tone "words" until it transcribes them."""
    from heedful.training.trainer import train

    root = tmp_path_factory.mktemp("tones")
    data = write_tone_corpus(root / "data", {"train": 400, "dev": 40, "test": 40})
    cfg = load_config(None, [
        f"data.dir={data}", "data.audio.time_masks=0", "data.audio.freq_masks=0",
        "model.embed_dim=64", "model.hidden_dim=64", "model.audio_channels=8",
        "model.dropout=0", "train.batch_tokens=800", "train.max_steps=150",
        "train.valid_every=50", "train.lr=0.005", "train.warmup_steps=20",
        "train.threads=1", "train.schedule=constant"], base=get_preset("speech-digits"))
    train(cfg, root / "run")
    return root / "run", data


def test_tone_words_are_learned(tone_run: tuple[Path, Path],
                                capsys: pytest.CaptureFixture[str]) -> None:
    from heedful.cli import main

    run, data = tone_run
    assert main(["evaluate", str(run), "--split", "test", "--json", "--by-length"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["wer"] <= 0.05, report
    assert [row["length"] for row in report["by_length"]] == [1, 2, 3]
    wavs = [str(data / "audio" / "test" / f"{i}.wav") for i in range(3)]
    assert main(["transcribe", str(run), *wavs, "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = [line.split("\t")[1].strip()
                for line in (data / "test.tsv").read_text().splitlines()[:3]]
    assert [r["text"] for r in lines] == expected
    picture, page = run.parent / "attention.png", run.parent / "attention.html"
    assert main(["attention", str(run), wavs[0], "-o", str(picture), "--html", str(page)]) == 0
    assert picture.stat().st_size > 1000
    out = capsys.readouterr().out
    assert "spectrogram with attention written to" in out and "interactive page" in out
    html = page.read_text()
    assert "data:image/png;base64," in html and "frames of the spectrogram" in html
    data = json.loads(html.split("const D = ")[1].split(";\n")[0].replace("<\\/", "</"))
    assert len(data["weights"]) == len(data["tgt"]) and data["boxes"][1][0] == 4
    assert data["stretch"] is True


def _b64(path: Path) -> str:
    import base64

    return base64.b64encode(path.read_bytes()).decode()


def test_http_transcribe_takes_audio_and_its_errors(tone_run: tuple[Path, Path]) -> None:
    import base64
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from heedful import Translator
    from heedful.serving.server import ServeSettings, create_app

    run, data = tone_run
    wavs = [data / "audio" / "test" / f"{i}.wav" for i in range(2)]
    expected = [line.split("\t")[1] for line in (data / "test.tsv").read_text().splitlines()]
    app = create_app({"tones": Translator.from_checkpoint(run)},
                     ServeSettings(max_audio_bytes=200_000, max_audio_seconds=8))
    with TestClient(app) as client:
        assert client.get("/models").json()[0]["source"] == "audio"
        r = client.post("/transcribe", json={"audio": [_b64(w) for w in wavs],
                                             "return_attention": True})
        assert r.status_code == 200, r.text
        out = r.json()["transcriptions"]
        assert [t["text"] for t in out] == expected[:2]
        frames, bands = out[0]["size"]
        assert bands == 40 and out[0]["seconds"] == pytest.approx(frames * 0.01, abs=1e-3)
        picture = Image.open(io.BytesIO(base64.b64decode(out[0]["spectrogram"])))
        assert picture.size == (frames, bands)
        attention = out[0]["attention"]
        boxes, spans = attention["boxes"], attention["spans"]
        assert len(attention["weights"][0][0][0]) == len(boxes) == len(spans)
        assert boxes[0][0] == 0 and boxes[-1][2] == frames and boxes[1][0] == 4  # 4 frames a slot
        assert spans[1] == pytest.approx([0.04, 0.08])
        buffer = io.BytesIO()
        Image.new("L", (32, 32), 255).save(buffer, format="PNG")
        png = base64.b64encode(buffer.getvalue()).decode()
        for body, status, message in [
            ({"audio": ["%%%"]}, 422, "audio.0: not valid base64"),
            ({"audio": ["aGVsbG8="]}, 422, "audio.0: not a readable WAV file"),
            ({"audio": ["A" * 400_000]}, 413, "audio.0: about 300,000 bytes"),
            ({"audio": [_b64(wavs[0])] * 20}, 413, "audio: more than 8 s of audio"),
            ({"images": [png]}, 422, "images: model 'tones' listens to audio"),
            ({}, 422, "images, audio: send one of them"),
        ]:
            r = client.post("/transcribe", json=body)
            assert r.status_code == status and message in r.json()["detail"], r.text
        r = client.post("/translate", json={"texts": ["a.wav"]})
        assert r.status_code == 422 and "POST /transcribe" in r.json()["detail"]


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="no chromium here (apt-get install -y chromium)")
def test_browser_transcribes_a_wav_and_lights_its_frames(tone_run: tuple[Path, Path],
                                                        live_server) -> None:
    from heedful import Translator
    from heedful.serving.server import create_app

    playwright = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    run, data = tone_run
    wav = data / "audio" / "test" / "0.wav"
    expected = (data / "test.tsv").read_text().splitlines()[0].split("\t")[1]
    app = create_app({"tones": Translator.from_checkpoint(run),
                      "bible-es-en": Translator.from_checkpoint("bible-es-en")})
    with live_server(app) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                                    args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('go').textContent === 'Transcribe'")
        assert "wav" in (page.get_attribute("#file", "accept") or "")
        page.set_input_files("#file", str(wav))
        page.wait_for_function("document.getElementById('translation').textContent"
                               ".length > 0")
        assert page.text_content("#translation") == expected
        assert page.is_visible("#player") and page.is_visible("#picture")
        page.hover("#chars span >> nth=0")
        assert int(page.get_attribute("#picture", "data-lit") or 0) >= 1
        assert "listens to the lit frames" in (page.text_content("#info") or "")
        page.fill("#beam", "2")
        page.click("#go")  # the button transcribes the chosen recording again
        page.wait_for_function("document.getElementById('go').disabled === false")
        assert page.text_content("#translation") == expected
        assert page.text_content("#error") == ""
        page.select_option("#model", "bible-es-en")  # nothing of the recording stays
        assert page.text_content("#go") == "Translate" and page.is_hidden("#stage")
        assert page.is_hidden("#player") and page.text_content("#chars") == ""
        browser.close()


def test_the_shipped_listener_transcribes_its_samples(capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    from heedful.cli import main
    from heedful.decoding.translator import SHIPPED_MODELS_DIR, resolve_run_dir

    folder = resolve_run_dir("spoken-digits")
    assert folder == SHIPPED_MODELS_DIR / "spoken-digits"
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < 4_000_000
    samples = sorted((folder / "samples").glob("*.wav"))
    assert len(samples) == 3
    assert main(["transcribe", "spoken-digits", *map(str, samples)]) == 0
    assert capsys.readouterr().out.splitlines() == ["9 3 0", "3 8 4 1 5", "0 5 8 0 1 0 2"]


def test_a_missing_recording_names_the_manifest_line(tmp_path: Path) -> None:
    from heedful.training.trainer import train

    data = write_tone_corpus(tmp_path / "data", {"train": 5, "dev": 2, "test": 2})
    (data / "audio" / "train" / "3.wav").unlink()
    cfg = load_config(None, [f"data.dir={data}", "train.max_steps=1"],
                      base=get_preset("speech-digits"))
    with pytest.raises(DataError, match=r"train\.tsv line 4: file not found: .*3\.wav"):
        train(cfg, tmp_path / "run")


def test_spoken_digits_corpus_from_the_shipped_sample(tmp_path: Path) -> None:
    from heedful.audio.spoken_digits import build_spoken_digits

    first = build_spoken_digits(FSDD_SAMPLE, tmp_path / "a", train=12, dev_per_length=1,
                                test_per_length=1, max_length=3)
    build_spoken_digits(FSDD_SAMPLE, tmp_path / "b", train=12, dev_per_length=1,
                        test_per_length=1, max_length=3)
    assert first["utterances"] == {"train": 12, "dev": 3, "test": 3}
    for name in ("train.tsv", "test.tsv", "audio/train/000005.wav", "README.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    test_lines = (tmp_path / "a" / "test.tsv").read_text().splitlines()
    assert [len(line.split("\t")[1].split()) for line in test_lines] == [1, 2, 3]
    assert "CC BY-SA 4.0" in (tmp_path / "a" / "README.md").read_text()
    # the held-out speaker's recordings are test's alone
    recordings = first["recordings"]
    assert isinstance(recordings, dict) and min(recordings.values()) > 0


@pytest.mark.skipif(shutil.which("espeak-ng") is None,
                    reason="no espeak-ng here (apt-get install -y espeak-ng)")
def test_spoken_sentences_hold_out_the_test_voices(tmp_path: Path) -> None:
    from heedful.audio.spoken_sentences import (
        TEST_ACCENTS,
        TEST_VARIANTS,
        build_spoken_sentences,
        spoken_form,
    )

    first = build_spoken_sentences(tmp_path / "a", train=4, dev=1, test=3, workers=2)
    build_spoken_sentences(tmp_path / "b", train=4, dev=1, test=3, workers=2)
    assert first["utterances"] == {"train": 4, "dev": 1, "test": 3}
    for name in ("train.tsv", "test.tsv", "audio/train/000003.wav", "README.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    voices = first["voices"]
    assert isinstance(voices, dict)
    heard = {v.split("+")[0] for v in voices["train"]} | {v.split("+")[1] for v in voices["train"]}
    assert all(v.split("+")[0] in TEST_ACCENTS and v.split("+")[1] in TEST_VARIANTS
               for v in voices["test"])
    assert not heard & (set(TEST_ACCENTS) | set(TEST_VARIANTS))
    samples, rate = read_wav(tmp_path / "a" / "audio" / "test" / "000000.wav")
    assert rate == 16_000 and 8 < len(samples) / rate < 30
    target = (tmp_path / "a" / "test.tsv").read_text().splitlines()[0].split("\t")[1]
    assert target == spoken_form(target) and target.islower()
    assert spoken_form("And God said, Let there be light: and it was 'so'.") == \
        "and god said let there be light and it was so"
    assert "held out" in (tmp_path / "a" / "README.md").read_text()


def test_joint_ctc_and_spec_augment_resume_exactly(tmp_path: Path, check_exact_resume) -> None:
    data = write_tone_corpus(tmp_path / "data", {"train": 60, "dev": 6, "test": 6})
    base = ["--preset", "speech-digits", f"data.dir={data}", "model.embed_dim=16",
            "model.hidden_dim=16", "model.audio_channels=4", "train.batch_tokens=300",
            "train.valid_every=100", "train.threads=1"]  # the preset's SpecAugment is on
    check_exact_resume(base, ["model.ctc_weight=0.3"])


def test_the_ctc_loss_reaches_its_head_and_only_in_training() -> None:
    from heedful.data import make_batch
    from heedful.training.step import loss_sum

    torch.manual_seed(0)
    model = build_model(model_config(arch="rnn", embed_dim=16, hidden_dim=16,
                                     audio_channels=4, ctc_weight=0.5), 8, 8,
                        frontend=Frontend("audio", 40))
    feats, mask = collate_features([np.random.default_rng(0).normal(size=(80, 40))
                                    .astype(np.float32)])
    text = make_batch([[2]], [[4, 5, 6]], 0, 1, 2)
    from heedful.data import Batch

    batch = Batch(feats, mask, text.tgt_in, text.tgt_out, text.tgt_mask, text.num_tgt_tokens)
    model.train()
    loss_sum(model, batch, 0.0).backward()
    assert model.ctc_head.weight.grad is not None
    assert float(model.ctc_head.weight.grad.abs().sum()) > 0
    model.eval()
    with torch.no_grad():
        plain = build_model(model_config(arch="rnn", embed_dim=16, hidden_dim=16,
                                         audio_channels=4), 8, 8,
                            frontend=Frontend("audio", 40))
        plain.load_state_dict({k: v for k, v in model.state_dict().items()
                               if not k.startswith("ctc_head")})
        plain.eval()
        # evaluation (dev loss) is the cross-entropy alone
        torch.testing.assert_close(loss_sum(model, batch, 0.0), loss_sum(plain, batch, 0.0))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_an_audio_model_trains_and_transcribes_on_cuda(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    from heedful import Translator
    from heedful.cli import main
    from heedful.manifest import read_manifest

    data = write_tone_corpus(tmp_path / "data", {"train": 120, "dev": 8, "test": 8})
    run = tmp_path / "run"
    assert main(["train", "--preset", "speech-digits", f"data.dir={data}",
                 "train.max_steps=20", "train.valid_every=20", "model.ctc_weight=0.3",
                 "train.device=cuda", "train.tf32=false", "--run-dir", str(run),
                 "--no-progress"]) == 0
    cpu = Translator.from_checkpoint(run, device="cpu")
    gpu = Translator.from_checkpoint(run, device="cuda")
    paths = [str(e.path) for e in read_manifest(data / "test.tsv")]
    src, mask = collate_features([cpu.reader.read(p) for p in paths])
    tgt = torch.full((len(paths), 3), 2)
    with torch.inference_mode():
        expected = cpu.model(src, mask, tgt)
        got = gpu.model(src.cuda(), mask.cuda(), tgt.cuda()).cpu()
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    capsys.readouterr()
    assert main(["transcribe", str(run), *paths, "--device", "cuda"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(paths)
