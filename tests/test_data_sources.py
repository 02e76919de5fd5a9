"""--data npy:PATH and frames:DIR on files the tests make, the PNG reader, and train() in Python."""
import struct
import zlib

import numpy as np
import pytest
import torch

from cellgen.cli import main
from cellgen.data import DataConfig, open_splits, parse_data_argument
from cellgen.data.arrays import ArraySequences
from cellgen.data.frames import FrameFolders
from cellgen.errors import CellgenError
from cellgen.training.png import PNGError, decode_png, encode_png

SMALL = ["--context", "3", "--future", "3", "--batch-size", "2", "--eval-sequences", "2", "--test-sequences", "2",
         "-p", "hidden=4", "-p", "k=3", "--threads", "1", "--quiet"]


# The runs pass --threads 1, which sets torch's threads for the whole process: one_thread
# (conftest.py) puts the setting back after the module.
pytestmark = pytest.mark.usefixtures("one_thread")


# --- PNG, written here by hand with every scanline filter -----------------------------------------

def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def png_bytes(pixels: np.ndarray, color_type: int, filters=(0, 1, 2, 3, 4), depth=8, palette=None) -> bytes:
    """A PNG whose rows use the given filters in turn (PNG spec §9), written independently of
    cellgen's writer (which only uses filter 0)."""
    height, width = pixels.shape[:2]
    data = pixels.astype(">u2" if depth == 16 else np.uint8).reshape(height, -1).view(np.uint8).reshape(height, -1)
    bpp = max(1, data.shape[1] // width)
    raw, previous = bytearray(), np.zeros(data.shape[1], dtype=int)
    for y in range(height):
        kind, row, out = filters[y % len(filters)], data[y].astype(int), []
        for i, x in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            b, c = previous[i], previous[i - bpp] if i >= bpp else 0
            predictor = (0, a, b, (a + b) // 2, _paeth(a, b, c))[kind]
            out.append((x - predictor) % 256)
        raw += bytes([kind] + out)
        previous = row

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    body = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0))
    if palette is not None:
        body += chunk(b"PLTE", palette.astype(np.uint8).tobytes())
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b"")


@pytest.mark.parametrize("color_type, shape", [(0, (9, 13)), (2, (9, 13, 3)), (4, (7, 5, 2)), (6, (7, 5, 4))])
def test_the_png_reader_undoes_every_filter(color_type, shape):
    pixels = np.random.default_rng(color_type).integers(0, 256, shape).astype(np.uint8)
    decoded = decode_png(png_bytes(pixels, color_type))
    expected = pixels if color_type in (0, 2) else pixels[..., 0] if color_type == 4 else pixels[..., :3]
    assert np.array_equal(decoded, expected)


def test_the_png_reader_reads_16_bit_palette_and_its_own_writers_files():
    wide = np.random.default_rng(5).integers(0, 65536, (6, 4)).astype(np.uint16)
    assert np.array_equal(decode_png(png_bytes(wide, 0, depth=16)), (wide >> 8).astype(np.uint8))
    palette = np.random.default_rng(6).integers(0, 256, (4, 3))
    indices = np.random.default_rng(7).integers(0, 4, (5, 6)).astype(np.uint8)
    assert np.array_equal(decode_png(png_bytes(indices, 3, palette=palette)), palette[indices])
    rgb = torch.randint(0, 256, (8, 10, 3), dtype=torch.uint8)
    assert np.array_equal(decode_png(encode_png(rgb)), rgb.numpy())


@pytest.mark.parametrize("data, message", [
    (b"GIF89a", "not a PNG file"),
    (png_bytes(np.zeros((4, 4), np.uint8), 0)[:-20], "truncated or corrupt"),
])
def test_what_the_png_reader_refuses(data, message):
    with pytest.raises(PNGError, match=message):
        decode_png(data)


# --- npy:PATH ---------------------------------------------------------------------------------------

def test_npy_in_both_layouts(tmp_path):
    rng = np.random.default_rng(0)
    time_major = rng.integers(0, 256, (8, 5, 16, 16)).astype(np.uint8)
    np.save(tmp_path / "tnhw.npy", time_major)
    sequence_major = rng.random((5, 8, 3, 16, 12)).astype(np.float32)
    np.save(tmp_path / "ntchw.npy", sequence_major)

    test = ArraySequences(tmp_path / "tnhw.npy", split="test", test_sequences=2, frames=6)
    assert len(test) == 2 and test[1].shape == (6, 1, 16, 16)
    assert torch.allclose(test[1][:, 0], torch.from_numpy(time_major[:6, 4] / np.float32(255)))
    splits = open_splits(DataConfig("npy", str(tmp_path / "ntchw.npy"), context=3, future=3, test_sequences=2))
    assert len(splits.train) == 3 and splits.channels == 3 and splits.frame_size == (16, 12)
    assert torch.equal(splits.test[0], torch.from_numpy(sequence_major[3, :6]))
    assert parse_data_argument("npy:/x/y.npy") == ("npy", "/x/y.npy")
    with pytest.raises(CellgenError, match="needs the file: --data npy:PATH.npy"):
        parse_data_argument("npy")


@pytest.mark.parametrize("array, message", [
    (np.zeros((4, 4, 4), np.uint8), "not a array layout"),
    (np.zeros((2, 3, 4, 4), np.int32), "int32 pixels"),
    (np.zeros((2, 3, 1, 4, 4), np.uint8), "sequences of 3 frames; 6 are needed"),
])
def test_npy_mistakes_are_clear_errors(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(CellgenError, match=message):
        ArraySequences(tmp_path / "bad.npy", frames=6, test_sequences=1)


# --- frames:DIR -------------------------------------------------------------------------------------

def write_frames(root, sequences=4, frames=7, size=(16, 16), rgb=False):
    rng = np.random.default_rng(1)
    videos = []
    for s in range(sequences):
        folder = root / f"seq_{s}"
        folder.mkdir(parents=True)
        video = rng.integers(0, 256, (frames, *size, 3) if rgb else (frames, *size)).astype(np.uint8)
        for t in range(frames):  # frame_2 before frame_10: numbers compare as numbers
            (folder / f"frame_{t + 1}.png").write_bytes(png_bytes(video[t], 2 if rgb else 0, filters=(t % 5,)))
        videos.append(video)
    return videos


def test_frame_folders_are_clips_in_order(tmp_path):
    videos = write_frames(tmp_path / "frames", sequences=3, frames=13)
    train = FrameFolders(tmp_path / "frames", split="train", test_sequences=2, frames=6)
    test = FrameFolders(tmp_path / "frames", split="test", test_sequences=2, frames=6)
    assert len(train) + len(test) == 6                     # 3 folders × ⌊13 / 6⌋ clips
    assert train[1].shape == (6, 1, 16, 16)
    assert torch.allclose(train[1][:, 0], torch.from_numpy(videos[0][6:12] / np.float32(255)))
    assert torch.allclose(test[1][:, 0], torch.from_numpy(videos[2][6:12] / np.float32(255)))
    colour = write_frames(tmp_path / "rgb", sequences=2, frames=6, size=(8, 12), rgb=True)
    clip = FrameFolders(tmp_path / "rgb", split="test", test_sequences=1, frames=6)[0]
    assert clip.shape == (6, 3, 8, 12) and torch.allclose(clip, torch.from_numpy(colour[1].transpose(0, 3, 1, 2) / np.float32(255)))


def test_frame_folder_mistakes_are_clear_errors(tmp_path):
    with pytest.raises(CellgenError, match="no such frames directory"):
        FrameFolders(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CellgenError, match="holds no sequence folders"):
        FrameFolders(tmp_path / "empty")
    write_frames(tmp_path / "short", sequences=2, frames=3)
    with pytest.raises(CellgenError, match="no folder under .* has 6 PNG frames \\(the longest has 3\\)"):
        FrameFolders(tmp_path / "short", frames=6)
    write_frames(tmp_path / "mixed", sequences=2, frames=6)
    (tmp_path / "mixed" / "seq_1" / "frame_3.png").write_bytes(png_bytes(np.zeros((8, 8), np.uint8), 0))
    odd = FrameFolders(tmp_path / "mixed", split="test", test_sequences=1, frames=6)
    with pytest.raises(CellgenError, match="frame_3.png is a 8×8 grey frame; the others are 16×16 grey"):
        odd[0]
    (tmp_path / "mixed" / "seq_1" / "frame_3.png").write_bytes(b"not a png")
    with pytest.raises(CellgenError, match="frame_3.png: not a PNG file"):
        odd[0]


def test_training_on_npy_and_frame_folders(tmp_path, capsys):
    np.save(tmp_path / "clips.npy", np.random.default_rng(2).random((6, 6, 1, 16, 16)).astype(np.float32))
    write_frames(tmp_path / "frames", sequences=6, frames=6)
    for data in (f"npy:{tmp_path / 'clips.npy'}", f"frames:{tmp_path / 'frames'}"):
        out = tmp_path / ("run-" + data.split(":")[0])
        assert main(["train", "convlstm", "--data", data, "--steps", "1", "--out", str(out), *SMALL]) == 0, \
            capsys.readouterr().err
        assert (out / "metrics.csv").read_text(encoding="utf-8").count("\neval,") == 1
    assert main(["eval", str(tmp_path / "run-frames"), "--json"]) == 0
    assert '"sequences": 2' in capsys.readouterr().out


# --- train() in Python ------------------------------------------------------------------------------

class Bars(torch.utils.data.Dataset):
    """A bar moving down a 16×16 frame, one row per frame: NumPy items, to show any Dataset works."""

    def __init__(self, count, frames=8):
        self.count, self.frames = count, frames

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        video = np.zeros((self.frames, 1, 16, 16), dtype=np.float64)
        for t in range(self.frames):
            video[t, 0, (index + t) % 16] = 1.0
        return video


def test_train_takes_any_dataset(tmp_path):
    from cellgen.training import train

    run = train("convlstm", Bars(10), test_data=Bars(3), steps=2, out=tmp_path / "run", context=4,
                params={"hidden": 4, "k": 3}, batch_size=2, eval_sequences=3, lr_schedule="onecycle")
    assert run.metrics["step"] == 2 and run.metrics["data"]["name"] == "python"
    assert run.metrics["evaluations"][-1]["model"]["sequences"] == 3
    assert run.metrics["model"]["frame_size"] == [16, 16]
    with torch.no_grad():
        future = run.model.predict(torch.from_numpy(Bars(1)[0][None, :4]).float(), future=4)
    assert future.shape == (1, 4, 1, 16, 16)
    assert {p.name for p in run.out.iterdir()} >= {"checkpoint.pt", "best.pt", "metrics.csv", "curves.png"}
    held = train("convlstm", Bars(10), steps=1, out=tmp_path / "held", context=4, params={"hidden": 4, "k": 3},
                 batch_size=2)
    assert held.metrics["data"]["test_sequences"] == 1            # 10 % of the data held out


class Loud(Bars):
    def __getitem__(self, index):
        return super().__getitem__(index) * 255


@pytest.mark.parametrize("dataset, options, message", [
    (Loud(4), {}, r"data\[0\] has values in \[0, 255\]; frames must be in \[0, 1\]"),
    (Bars(4, frames=3), {"future": 4}, "data\\[0\\] has 3 frames; context \\+ future = 8 are needed"),
])
def test_train_says_what_is_wrong_with_a_dataset(tmp_path, dataset, options, message):
    from cellgen.training import train

    with pytest.raises(CellgenError, match=message):
        train("convlstm", dataset, steps=1, out=tmp_path / "run", context=4, params={"k": 3}, **options)
    with pytest.raises(TypeError, match="unknown options \\['learning_rate'\\]"):
        train("convlstm", Bars(4), steps=1, out=tmp_path / "run", learning_rate=0.1)
