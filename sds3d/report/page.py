"""The page shell (``templates/page.html`` + ``style.css``), the vendored viewer, and small HTML pieces."""

from __future__ import annotations

import base64
import datetime
import html
import io
import os
import shutil
from pathlib import Path
from string import Template

from ..errors import UserError

HERE = Path(__file__).parent
VENDOR = HERE / "vendor"
MODEL_VIEWER = "model-viewer-umd.min.js"
MODEL_VIEWER_VERSION = "4.4.0"
#: What a page's folder gets in ``report_files/``: the script and the licences that must travel with it.
VENDOR_FILES = (MODEL_VIEWER, "LICENSE-model-viewer.txt", "THIRD-PARTY-LICENSES.txt")
ASSET_DIR = "report_files"


class ReportError(UserError):
    """A report page cannot be written (the message says what is missing)."""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def page(title: str, body: str, subtitle: str = "", head: str = "", footer: str = "") -> str:
    """A whole HTML page around ``body`` (already HTML); ``title``/``subtitle``/``footer`` are text."""
    from .. import __version__

    shell = Template((HERE / "templates" / "page.html").read_text())
    return shell.substitute(title=esc(title), subtitle=esc(subtitle), head=head, body=body, footer=esc(footer),
                            style=(HERE / "templates" / "style.css").read_text(), version=esc(__version__),
                            date=datetime.date.today().isoformat())


def install_viewer(folder: Path) -> str:
    """Copy the vendored ``<model-viewer>`` (and its licences) into ``folder/report_files``; its script tag.

    A copy (about 1 MB), not a link into the installed package: the run folder stays whole when moved.
    """
    dest = Path(folder) / ASSET_DIR
    dest.mkdir(parents=True, exist_ok=True)
    for name in VENDOR_FILES:
        (dest / name).unlink(missing_ok=True)  # never write through a link into the installed package
        shutil.copyfile(VENDOR / name, dest / name)
    return f'<script src="{ASSET_DIR}/{MODEL_VIEWER}"></script>'


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def png_data_uri(image) -> str:
    """A PIL image as an inline PNG."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return data_uri(buf.getvalue(), "image/png")


def rel(path: Path, folder: Path) -> str:
    """``path`` as a relative URL from ``folder`` (links keep working when the folder moves)."""
    return esc(Path(os.path.relpath(Path(path), Path(folder))).as_posix())


def table(rows: list[tuple], header: tuple | None = None) -> str:
    """A table of text cells; numbers are right-aligned and shown with 4 significant digits."""

    def cell(v, tag="td"):
        if isinstance(v, float):
            return f'<{tag} class="num">{v:.4g}</{tag}>'
        if isinstance(v, int) and not isinstance(v, bool):
            return f'<{tag} class="num">{v}</{tag}>'
        return f"<{tag}>{esc('' if v is None else v)}</{tag}>"

    head = "<tr>" + "".join(cell(h, "th") for h in header) + "</tr>" if header else ""
    return "<table>" + head + "".join("<tr>" + "".join(cell(v) for v in r) + "</tr>" for r in rows) + "</table>"


def section(title: str, body: str, id: str = "") -> str:
    ident = f' id="{esc(id)}"' if id else ""
    return f"<section{ident}><h2>{esc(title)}</h2>{body}</section>"
