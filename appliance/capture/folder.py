"""Images in a directory, in name order, once or in a loop (a replay source for tests and for
frames exported from another camera). A file that is not a readable image is skipped with an
error that names it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from appliance.capture import CorruptFrame, Frame, FrameSource, SourceError, register
from appliance.models import utcnow


@register
class FolderSource(FrameSource):
    type = "folder"

    def __init__(self, settings) -> None:
        super().__init__(settings)
        self._files: list[Path] = []
        self._next = 0
        self._good = 0  # images read in this pass

    @property
    def path(self) -> Path:
        return Path(self.settings.source).expanduser()

    def _list(self) -> list[Path]:
        if not self.settings.source:
            raise SourceError("capture.source is empty: set it to a directory of images for capture.type = folder")
        if not self.path.is_dir():
            raise SourceError(f"image folder {self.path} does not exist or is not a directory (capture.source)")
        files = sorted(
            (p for p in self.path.iterdir() if p.is_file() and not p.name.startswith(".")), key=lambda p: p.name
        )
        if not files:
            raise SourceError(f"image folder {self.path} has no files")
        return files

    def open(self) -> None:
        # Listed again at every pass, so images added to the folder are picked up.
        self._files = self._list()
        self._next = 0
        self._good = 0

    def read(self) -> Frame | None:
        if self._next >= len(self._files):
            if self._good == 0:
                raise SourceError(f"image folder {self.path}: none of its {len(self._files)} files is a readable image")
            if not self.settings.loop:
                return None
            self.open()
        path = self._files[self._next]
        self._next += 1
        try:
            with Image.open(path) as im:
                # PIL refuses truncated files on load (OpenCV would hand back a half-grey image).
                image = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise CorruptFrame(f"skipped {path}: not a readable image ({exc})") from exc
        self._good += 1
        return Frame(
            image=image, captured_at=utcnow(), mono=time.monotonic(), index=self._next_index(), source=self.name
        )
