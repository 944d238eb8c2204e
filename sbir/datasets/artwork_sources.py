"""Where other artists' renderings of the same emoji come from, and how one is drawn: the artwork packages
``make setup`` installs (npm packages pinned by ``package-lock.json``, the Debian font ``fonts-symbola``).

Each source maps an emoji's code points (``sequence_key``: U+FE0F dropped) to one drawable item and renders it
into a square image. Photo sources render in colour on white; sketch sources are monochrome line art and render
as black ink on white (mode L). Nothing is downloaded at run time: a source that is not installed is an error
naming the package and ``make setup``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from sbir.datasets.base import DatasetError
from sbir.datasets.strokes import SvgError, render_photo

SELECTOR = 0xFE0F
NODE_MODULES = Path("node_modules")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
Key = tuple[int, ...]


def sequence_key(code: str) -> Key | None:
    """An emoji's code points without U+FE0F, from a file stem or hexcode (``0023-FE0F-20E3`` → (0x23, 0x20E3));
    None if it does not spell code points."""
    try:
        points = tuple(int(part, 16) for part in code.strip().replace(" ", "-").replace("_", "-").split("-"))
    except ValueError:
        return None
    return tuple(p for p in points if p != SELECTOR) or None


def name_slug(name: str) -> str:
    """An emoji name as Iconify spells icon names: ``Santa Claus`` → ``santa-claus``, ``keycap: *`` → ``keycap``."""
    name = name.lower().replace("’", "").replace("'", "")
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-")


def installed_folder(package: str, env: str, environ: dict[str, str] | None = None) -> Path:
    """``$<env>`` if set, else ``node_modules/<package>`` under the working directory or the project root."""
    environ = os.environ if environ is None else environ
    if environ.get(env):
        return Path(environ[env])
    for root in (NODE_MODULES, PROJECT_ROOT / NODE_MODULES):
        if (root / package).is_dir():
            return root / package
    return NODE_MODULES / package


def package_version(folder: Path) -> str:
    """The installed package's version (its package.json), or 'unknown' for a plain folder."""
    try:
        return str(json.loads((folder / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "unknown"


def framed(art: Image.Image, size: int, margin: float, mode: str) -> Image.Image:
    """``art`` (already ``inner``² px) centred on a white ``size``² canvas, ``margin`` of the side each way."""
    art = art.convert(mode)
    if art.width == size:
        return art
    canvas = Image.new(mode, (size, size), "white")
    canvas.paste(art, ((size - art.width) // 2, (size - art.height) // 2))
    return canvas


def inner_size(size: int, margin: float) -> int:
    return max(1, round(size * (1 - 2 * margin)))


@dataclass(frozen=True)
class ArtworkSource:
    """One installed artwork set: what it is, where it lives, and how one emoji of it is drawn."""

    name: str
    package: str  # as installed (npm name, or the Debian package)
    license: str
    attribution: str
    domain: str  # photo | sketch
    margin: float  # white border per side that puts its art at OpenMoji's scale (~70 % of the side)
    env: str = ""  # environment variable naming another folder of the same layout
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return "RGB" if self.domain == "photo" else "L"

    @property
    def env_var(self) -> str:
        return self.env or f"ZSSBIR_{self.name.upper()}_DIR"

    def located(self) -> Path:
        return installed_folder(self.package, self.env_var)

    def folder(self) -> Path:
        """The installed artwork; a clear error when it is missing."""
        folder = self.located()
        if not self.installed(folder):
            raise DatasetError(f"{self.name}: artwork not found at {folder}: run `make setup` in the repository "
                               f"root (it installs {self.package}, pinned by the project's files), or set "
                               f"{self.env_var} to a folder of the same layout")
        return folder

    def installed(self, folder: Path) -> bool:
        return folder.is_dir()

    def version(self) -> str:
        return package_version(self.folder())

    def index(self, names: dict[Key, list[str]]) -> dict[Key, Any]:
        """Code points → the item to draw. ``names``: each emoji's names (CLDR, Unicode) for sets named by name."""
        raise NotImplementedError

    def draw(self, item: Any, size: int) -> Image.Image:
        """One item's art, ``size``² px, on white."""
        raise NotImplementedError

    def render(self, item: Any, size: int, margin: float) -> Image.Image:
        return framed(self.draw(item, inner_size(size, margin)), size, margin, self.mode)


class SvgFolder(ArtworkSource):
    """A folder of ``<code points>.svg`` files (Twemoji); if two differ only by FE0F, the one without it wins."""

    def installed(self, folder: Path) -> bool:
        return folder.is_dir() and any(folder.glob("*.svg"))

    def index(self, names: dict[Key, list[str]]) -> dict[Key, Any]:
        index: dict[Key, Path] = {}
        for path in sorted(self.folder().glob("*.svg"), key=lambda p: (len(p.stem), p.stem)):
            key = sequence_key(path.stem)
            if key is not None:
                index.setdefault(key, path)
        return index

    def draw(self, item: Path, size: int) -> Image.Image:
        return render_photo(item.read_text(encoding="utf-8"), size, f"{self.package}/{item.name}")


class ImageFolder(ArtworkSource):
    """A folder of raster renders named by code points (Fluent 3D's 256 px RGBA WebP), composited on white."""

    def installed(self, folder: Path) -> bool:
        return (folder / self.extra["subfolder"]).is_dir()

    def index(self, names: dict[Key, list[str]]) -> dict[Key, Any]:
        folder = self.folder() / self.extra["subfolder"]
        index: dict[Key, Path] = {}
        for path in sorted(folder.glob(f"*.{self.extra['suffix']}"), key=lambda p: (len(p.stem), p.stem)):
            key = sequence_key(path.stem)
            if key is not None:
                index.setdefault(key, path)
        return index

    def draw(self, item: Path, size: int) -> Image.Image:
        try:
            with Image.open(item) as image:
                rgba = image.convert("RGBA")
        except OSError as error:
            raise SvgError(f"{self.package}/{item.name}: Pillow cannot decode it ({error})") from error
        canvas = Image.new("RGBA", rgba.size, "white")
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)


class IconifySet(ArtworkSource):
    """An Iconify JSON icon set (``icons.json``): by code point through ``chars.json`` where it maps them, else
    by emoji name (CLDR, then the Unicode character name); monochrome sets draw ``currentColor`` black."""

    def installed(self, folder: Path) -> bool:
        return (folder / "icons.json").is_file()

    def icons(self) -> dict[str, Any]:
        return json.loads((self.folder() / "icons.json").read_text(encoding="utf-8"))

    def index(self, names: dict[Key, list[str]]) -> dict[Key, Any]:
        data = self.icons()
        icons, aliases = data["icons"], data.get("aliases", {})
        width, height = data.get("width", 16), data.get("height", 16)

        def item(name: str) -> tuple[str, str] | None:
            seen = set()
            while name in aliases and name not in seen:  # an alias names its parent icon
                seen.add(name)
                name = aliases[name]["parent"]
            icon = icons.get(name)
            if icon is None:
                return None
            box = f"0 0 {icon.get('width', width)} {icon.get('height', height)}"
            return name, f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="{box}">{icon["body"]}</svg>'

        chars_path = self.folder() / "chars.json"
        chars = json.loads(chars_path.read_text()) if chars_path.is_file() else {}
        index: dict[Key, Any] = {}
        for code, name in sorted(chars.items(), key=lambda pair: (len(pair[0]), pair[0])):
            key = sequence_key(code)
            if key is not None and key not in index and (found := item(name)) is not None:
                index[key] = found
        for key, candidates in names.items():
            if key not in index:
                found = next((f for f in map(item, map(name_slug, candidates)) if f is not None), None)
                if found is not None:
                    index[key] = found
        return index

    def draw(self, item: tuple[str, str], size: int) -> Image.Image:
        name, svg = item
        if self.domain == "sketch":
            svg = svg.replace("currentColor", "#000000")
        return render_photo(svg, size, f"{self.package}: {name}")


class FontGlyphs(ArtworkSource):
    """Glyphs of a monochrome font (Symbola), one code point each; an emoji of several code points has none."""

    def located(self) -> Path:
        return Path(os.environ.get(self.env_var) or self.extra["folder"])

    def font_file(self) -> Path:
        return self.folder() / self.extra["file"]

    def installed(self, folder: Path) -> bool:
        return (folder / self.extra["file"]).is_file()

    def version(self) -> str:
        """The Debian package's version, as dpkg knows it (fonts are not npm packages)."""
        try:
            done = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", self.package], capture_output=True,
                                  text=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError):
            return "unknown"
        return done.stdout.strip() or "unknown"

    def index(self, names: dict[Key, list[str]]) -> dict[Key, Any]:
        from fontTools.ttLib import TTFont

        with TTFont(self.font_file(), lazy=True) as font:
            covered = set(font.getBestCmap())
        return {key: key[0] for key in names if len(key) == 1 and key[0] in covered}

    def draw(self, item: int, size: int) -> Image.Image:
        """The glyph scaled so its ink box fills ``size`` on its longer side, centred."""
        big = 4 * size
        font = ImageFont.truetype(str(self.font_file()), big)
        box = font.getbbox(chr(item))
        canvas = Image.new("L", (box[2] - box[0] + 2, box[3] - box[1] + 2), 255)
        ImageDraw.Draw(canvas).text((1 - box[0], 1 - box[1]), chr(item), font=font, fill=0)
        scale = size / max(canvas.size)
        glyph = canvas.resize((max(1, round(canvas.width * scale)), max(1, round(canvas.height * scale))),
                              Image.Resampling.LANCZOS)
        out = Image.new("L", (size, size), 255)
        out.paste(glyph, ((size - glyph.width) // 2, (size - glyph.height) // 2))
        return out


_CC_BY = "https://creativecommons.org/licenses/by/4.0/"
SOURCES: dict[str, ArtworkSource] = {source.name: source for source in (
    SvgFolder("twemoji", "@twemoji/svg", "CC BY 4.0",
              f"Twemoji by Twitter/X and contributors (https://github.com/jdecked/twemoji). Graphics license: "
              f"CC BY 4.0 ({_CC_BY})", "photo", 0.14, env="ZSSBIR_TWEMOJI_SVG_DIR"),
    IconifySet("fluent_flat", "@iconify-json/fluent-emoji-flat", "MIT",
               "Fluent Emoji (flat) by Microsoft Corporation (https://github.com/microsoft/fluentui-emoji), MIT; "
               "packaged by Iconify", "photo", 0.1),
    ImageFolder("fluent_3d", "@lobehub/fluent-emoji-3d", "MIT",
                "Fluent Emoji (3D) by Microsoft Corporation (https://github.com/microsoft/fluentui-emoji), MIT; "
                "256 px renders packaged by LobeHub", "photo", 0.1, extra={"subfolder": "assets", "suffix": "webp"}),
    IconifySet("fluent_hc", "@iconify-json/fluent-emoji-high-contrast", "MIT",
               "Fluent Emoji (high contrast) by Microsoft Corporation (https://github.com/microsoft/fluentui-emoji), "
               "MIT; packaged by Iconify", "sketch", 0.1),
    IconifySet("emojione_mono", "@iconify-json/emojione-monotone", "CC BY 4.0",
               f"EmojiOne monotone by Emoji One (https://github.com/joypixels/emojione-legacy), CC BY 4.0 "
               f"({_CC_BY}); packaged by Iconify", "sketch", 0.1),
    FontGlyphs("symbola", "fonts-symbola", "free for any use",
               "Symbola by George Douros (Debian package fonts-symbola): fonts in Symbola are free for any use",
               "sketch", 0.12, env="ZSSBIR_SYMBOLA_DIR",
               extra={"file": "Symbola_hint.ttf", "folder": "/usr/share/fonts/truetype/ancient-scripts"}),
)}


def emoji_names(emoji_test: Path) -> dict[Key, list[str]]:
    """Each fully-qualified emoji's names: its CLDR short name (emoji-test.txt) and, for a single code point, its
    Unicode character name (older sets such as EmojiOne name icons by it: ``pouting-cat-face``)."""
    names: dict[Key, list[str]] = {}
    for line in emoji_test.read_text(encoding="utf-8").splitlines():
        codes, _, rest = line.partition(";")
        status, _, comment = rest.partition("#")
        if line.startswith("#") or status.strip() != "fully-qualified":
            continue
        key = sequence_key("-".join(codes.split()))
        if key is None:
            continue
        candidates = [comment.strip().split(" ", 2)[-1]]
        if len(key) == 1:
            candidates.append(unicodedata.name(chr(key[0]), ""))
        names[key] = [c for c in candidates if c]
    return names

