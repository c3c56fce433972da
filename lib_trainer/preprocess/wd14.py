"""WD14 taggers (SmilingWolf's ONNX models) through onnxruntime.

The contract every model in `wd14_models.json` follows, and that the tests' tiny model
copies: `model.onnx` takes NHWC float32 BGR pixels in 0-255 at the size its input shape
says (448 for the v2/v3 families), and gives [N, num_tags] probabilities in the row order
of `selected_tags.csv` (columns tag_id,name,category,count; category 9 = rating,
0 = general, 4 = character).

Files are looked up on disk first and downloaded only when asked (huggingface_hub);
onnxruntime and huggingface_hub are imported only when a model is used.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import InvalidInput, UserError

MODEL_FILE, TAGS_FILE = "model.onnx", "selected_tags.csv"
MODEL_LIST = os.path.join(os.path.dirname(__file__), "wd14_models.json")
RATING, GENERAL, CHARACTER = 9, 0, 4


class ModelMissing(UserError, FileNotFoundError):
    """The model files are not on disk (and were not, or could not be, downloaded)."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    repo: str
    general_threshold: float = 0.35
    character_threshold: float = 0.85


def load_model_list(path: str = MODEL_LIST) -> dict[str, ModelInfo]:
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    return {entry["name"]: ModelInfo(**entry) for entry in data["models"]}


def default_model_name(path: str = MODEL_LIST) -> str:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)["default"]


def default_models_dir() -> str:
    """Outside the WebUI; inside it the host passes `<webui>/models/wd14` instead."""
    return os.environ.get("LIB_TRAINER_WD14_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "lib_trainer", "wd14")


CLI_DOWNLOAD = "--download on the command line"
UI_DOWNLOAD = "tick \"Download the model if it is missing\" above"


def ensure_model(info: ModelInfo, models_dir: str, download: bool = False, download_hint: str = CLI_DOWNLOAD) -> str:
    """The folder holding the model's two files; downloads them only if `download` and missing."""
    folder = os.path.join(models_dir, info.name)
    missing = [name for name in (MODEL_FILE, TAGS_FILE) if not os.path.isfile(os.path.join(folder, name))]
    if not missing:
        return folder  # on disk: no network call at all
    how_to = (f"put {MODEL_FILE} and {TAGS_FILE} from https://huggingface.co/{info.repo} into {folder}")
    if not download:
        raise ModelMissing(f"WD14 model {info.name} is not downloaded: {how_to}, or ask for the download "
                           f"({download_hint})")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as error:
        raise ModelMissing(f"huggingface_hub is not installed, so {info.name} cannot be downloaded: {how_to}") from error
    try:
        for name in missing:
            hf_hub_download(info.repo, name, local_dir=folder)
    except Exception as error:  # offline, proxy, rate limit, missing repo: all end the same way
        raise ModelMissing(f"download of {info.name} failed ({error}); {how_to}") from error
    return folder


@dataclass
class Labels:
    names: list[str]
    categories: np.ndarray  # int, one per output column

    @classmethod
    def read(cls, path: str) -> "Labels":
        try:
            with open(path, newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            if rows and {"name", "category"} <= set(rows[0]):
                return cls([row["name"] for row in rows], np.array([int(row["category"]) for row in rows]))
        except (UnicodeDecodeError, ValueError, TypeError, csv.Error):
            pass
        raise InvalidInput(f"{path}: not a WD14 {TAGS_FILE} (expected UTF-8 text with the columns "
                           "tag_id,name,category,count): download it again")


def create_session(model_path: str, use_gpu: bool = True, notice=print):
    """An onnxruntime session, on the GPU when it works, else on the CPU with a notice."""
    try:
        import onnxruntime as ort
    except ImportError as error:
        raise ModelMissing("onnxruntime is not installed: pip install onnxruntime-gpu (or onnxruntime "
                           "for CPU only) to use WD14 taggers") from error
    available = ort.get_available_providers()
    wanted = [p for p in ("CUDAExecutionProvider", "ROCMExecutionProvider", "DmlExecutionProvider") if p in available]
    if use_gpu and wanted:
        try:
            session = ort.InferenceSession(model_path, providers=[wanted[0], "CPUExecutionProvider"])
            if wanted[0] in session.get_providers():
                return session
            notice(f"onnxruntime could not start {wanted[0]}; tagging on the CPU (slower)")
            return session
        except Exception as error:  # e.g. CUDA/cuDNN version mismatch
            notice(f"onnxruntime GPU provider failed ({error}); tagging on the CPU (slower)")
    try:
        return ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's own types (InvalidProtobuf, Fail...) for a damaged file
        reason = str(error).strip().splitlines()[-1][:200] if str(error).strip() else type(error).__name__
        raise InvalidInput(f"{model_path}: onnxruntime cannot load it ({reason}); the file is damaged or not "
                           "an ONNX model: download it again") from error


def prepare(image: Image.Image, size: int) -> np.ndarray:
    """WD14 input for one picture: padded square on white, resized, BGR float32 0-255 (HWC)."""
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(flat, rgba)
    image = image.convert("RGB")
    side = max(image.size)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    if side != size:
        square = square.resize((size, size), Image.BICUBIC)
    return np.asarray(square, dtype=np.float32)[:, :, ::-1]


class WD14Model:
    """A loaded WD14 model: `predict(images)` -> [N, num_tags] probabilities."""

    def __init__(self, folder: str, use_gpu: bool = True, notice=print):
        self.folder = folder
        missing = [name for name in (MODEL_FILE, TAGS_FILE) if not os.path.isfile(os.path.join(folder, name))]
        if missing:
            where = "is not a folder" if not os.path.isdir(folder) else f"has no {' and no '.join(missing)}"
            raise InvalidInput(f"{folder} {where}: a WD14 model folder holds two files, {MODEL_FILE} and "
                               f"{TAGS_FILE}, from the model's Hugging Face page")
        self.labels = Labels.read(os.path.join(folder, TAGS_FILE))
        self.session = create_session(os.path.join(folder, MODEL_FILE), use_gpu, notice)
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        height = model_input.shape[1]
        self.size = int(height) if isinstance(height, int) or str(height).isdigit() else 448
        outputs = self.session.get_outputs()[0].shape[-1]
        if isinstance(outputs, int) and outputs != len(self.labels.names):
            raise InvalidInput(f"{folder}: the model gives {outputs} tags but {TAGS_FILE} lists "
                               f"{len(self.labels.names)}; the two files do not belong together")

    def predict(self, images: list[Image.Image]) -> np.ndarray:
        batch = np.stack([prepare(image, self.size) for image in images])
        return self.session.run(None, {self.input_name: batch})[0]

    def scored_tags(self, probabilities: np.ndarray, general_threshold: float,
                    character_threshold: float) -> tuple[dict[str, float], list[tuple[str, float]]]:
        """(ratings, [(tag, probability)] of general and character tags over their thresholds)."""
        names, categories = self.labels.names, self.labels.categories
        ratings = {names[i]: float(probabilities[i]) for i in np.flatnonzero(categories == RATING)}
        keep = ((categories == GENERAL) & (probabilities >= general_threshold)) | (
            (categories == CHARACTER) & (probabilities >= character_threshold))
        return ratings, [(names[i], float(probabilities[i])) for i in np.flatnonzero(keep)]
