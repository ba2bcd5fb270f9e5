"""The text encoder of search by meaning (``_searchmode=meaning``): the
CLIP text tower that matches the stored image vectors, turning a query into
a unit vector that the vectors file (vector_index.py) is searched with.

Optional: it needs ``pip install 'datasette-laion[clip]'`` (open_clip and
torch). ``available()`` says whether they are installed without importing
them (torch takes seconds to import); nothing here imports them before a
search by meaning asks for the encoder.

The model is loaded once per process, on first use, under a lock: requests
that arrive while it loads wait for that one load. Loading and encoding
block; callers run them in a thread (meaning_search.py). A failed load is
remembered for RETRY_AFTER seconds, and the searches in that time fail at
once with its reason: a load that fails slowly (open_clip's download of
the weights retries for about a minute where the server has no way out)
costs one search that minute, not every search, and the searches queued
behind it do not each try again.

Configured in metadata (``plugins: datasette-laion:``), each key with its
default here:

* ``clip_model``: open_clip's name of the model (default ViT-L-14, the model
  of LAION's image embeddings);
* ``clip_pretrained``: its weights, an open_clip tag (default openai:
  downloaded once into open_clip's cache) or the path of a checkpoint;
* ``clip_model_config``: the path of an open_clip model config (JSON) to
  add to open_clip's models, for a model it does not ship; its name is the
  file's name without ``.json``, and ``clip_model`` defaults to it.
"""
import importlib.util
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from time import monotonic
from typing import Optional

import numpy as np

DEFAULT_MODEL = "ViT-L-14"  # LAION-5B's image embeddings are OpenAI CLIP ViT-L/14's
DEFAULT_PRETRAINED = "openai"
INSTALL = "pip install 'datasette-laion[clip]'"
PROBE_TEXT = "a photo"  # encoded at load: the model's dimension, and its first run done
# The vectors of this many recent queries are kept per process: a search's
# next pages, and its other views, are not encoded again (~0.1 s each for
# ViT-L/14 on a CPU core; 3 KB kept each).
EMBEDDINGS_KEPT = 256
RETRY_AFTER = 300  # seconds a failed load is remembered before the next search tries again


class LoadError(Exception):
    """The encoder could not be loaded (weights, configuration, install):
    the server's problem, not the request's. ``retry_after``: the seconds
    until the next search tries to load it again."""

    def __init__(self, message, retry_after=RETRY_AFTER):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Settings:
    model: str = DEFAULT_MODEL
    pretrained: str = DEFAULT_PRETRAINED
    model_config: Optional[str] = None

    def describe(self):
        return f"open_clip {self.model} ({Path(self.pretrained).name})"


def settings_from(config):
    """The Settings of the plugin's configuration (a dict); raises LoadError
    for a value that cannot work."""
    model_config = config.get("clip_model_config")
    default_model = Path(model_config).stem if isinstance(model_config, str) and model_config else DEFAULT_MODEL
    found = Settings(model=config.get("clip_model") or default_model,
                     pretrained=config.get("clip_pretrained") or DEFAULT_PRETRAINED,
                     model_config=model_config or None)
    for key, value in (("clip_model", found.model), ("clip_pretrained", found.pretrained),
                       ("clip_model_config", found.model_config)):
        if value is not None and not isinstance(value, str):
            raise LoadError(f"datasette-laion: {key} must be a string, not {value!r}")
    if found.model_config is not None and not Path(found.model_config).is_file():
        raise LoadError(f"datasette-laion: clip_model_config {found.model_config} is not a file")
    return found


def available():
    """Whether the clip extra (open_clip and torch) is installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("open_clip", "torch"))


class Encoder:
    """A loaded text tower and its tokenizer: ``embed(text)`` is a float32
    unit vector of ``dim`` numbers."""

    def __init__(self, model, tokenizer, settings):
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self._kept, self._kept_lock = OrderedDict(), threading.Lock()
        self.dim = len(self._encode(PROBE_TEXT))

    def embed(self, text):
        """The unit vector of ``text`` (read-only: it may be kept)."""
        with self._kept_lock:
            vector = self._kept.get(text)
            if vector is not None:
                self._kept.move_to_end(text)
                return vector
        vector = self._encode(text)
        with self._kept_lock:
            self._kept[text] = vector
            while len(self._kept) > EMBEDDINGS_KEPT:
                self._kept.popitem(last=False)
        return vector

    def _encode(self, text):
        import torch

        with torch.inference_mode():
            vector = self.model.encode_text(self.tokenizer([text]))[0].float().numpy()
        norm = float(np.linalg.norm(vector))
        vector = vector / norm if norm else vector
        vector.setflags(write=False)
        return vector


_lock = threading.Lock()
_encoders = {}  # Settings: Encoder, for this process
_failures = {}  # Settings: (monotonic() when the load failed, its message)


def encoder(settings):
    """The Encoder of ``settings``, loaded once per process; raises
    LoadError, at once while an earlier failure is remembered. Blocking
    (the first call loads the model): call in a thread."""
    found = _encoders.get(settings)
    if found is not None:
        return found
    with _lock:
        found = _encoders.get(settings)
        if found is None:
            failed = _failures.get(settings)
            if failed is not None:
                waited = monotonic() - failed[0]
                if waited < RETRY_AFTER:
                    raise LoadError(f"{failed[1]} (the next try in {RETRY_AFTER - waited:.0f} s)",
                                    retry_after=RETRY_AFTER - waited)
            try:
                found = _encoders[settings] = _load(settings)
            except LoadError as ex:
                _failures[settings] = (monotonic(), str(ex))
                raise
            _failures.pop(settings, None)
    return found


def _load(settings):
    """An Encoder: open_clip's model of ``settings`` with its weights, less
    its image tower (ViT-L/14's is ~1.2 GB of the ~1.7 GB), on the CPU."""
    try:
        open_clip = import_open_clip()
    except ImportError as ex:
        raise LoadError(f"search by meaning needs {INSTALL} ({ex})") from None
    try:
        if settings.model_config is not None:
            open_clip.add_model_config(settings.model_config)
        # OpenAI's weights were trained with QuickGELU; open_clip's plain
        # ViT-L-14 config does not use it unless told (its name for that is
        # ViT-L-14-quickgelu): say what the tag was trained with.
        from open_clip.pretrained import get_pretrained_cfg

        quick_gelu = bool(get_pretrained_cfg(settings.model, settings.pretrained).get("quick_gelu"))
        model = open_clip.create_model(settings.model, pretrained=settings.pretrained, device="cpu",
                                       force_quick_gelu=quick_gelu)
        tokenizer = open_clip.get_tokenizer(settings.model)
    except Exception as ex:  # unknown model, weights not found or not downloadable, wrong shapes
        raise LoadError(f"the text encoder {settings.describe()} could not be loaded: {ex}") from None
    model.eval()
    if getattr(model, "visual", None) is not None:
        model.visual = None  # encode_text never uses it
    return Encoder(model, tokenizer, settings)


def import_open_clip():
    """open_clip, imported. torchvision, which open_clip imports for its
    image transforms, fails to import when its compiled ops do not match the
    installed torch (PyPI's torchvision, built for CUDA torch, beside a CPU
    build of torch): it registers a shape function for its ``nms`` op whether
    or not the op was loaded. Declaring the ops it registers that way lets it
    import; search by meaning uses none of them (text only)."""
    try:
        import torchvision  # noqa: F401
    except RuntimeError as ex:
        if "torchvision::" not in str(ex):
            raise
        import torch

        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        global _torchvision_ops
        _torchvision_ops = torch.library.Library("torchvision", "FRAGMENT")
        for op in ("nms", "qnms"):
            _torchvision_ops.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision  # noqa: F401, F811
    import open_clip

    return open_clip


_torchvision_ops = None  # the declarations above live as long as the process
