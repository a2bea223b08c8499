"""Render a terminal screen captured with `tmux capture-pane -e -p` (ANSI SGR colours) as an
HTML page, so headless Chromium can turn it into a PNG screenshot."""

from __future__ import annotations

import html
import re
import sys

BASIC = [
    "#1d1f21",
    "#cc6666",
    "#b5bd68",
    "#f0c674",
    "#81a2be",
    "#b294bb",
    "#8abeb7",
    "#c5c8c6",
    "#666666",
    "#d54e53",
    "#b9ca4a",
    "#e7c547",
    "#7aa6da",
    "#c397d8",
    "#70c0b1",
    "#eaeaea",
]
FOREGROUND, BACKGROUND = "#d0d0d0", "#1c1c1c"
SGR = re.compile(r"\x1b\[([0-9;:]*)m")


def color256(n: int) -> str:
    """The xterm 256-colour palette entry `n` as #rrggbb."""
    if n < 16:
        return BASIC[n]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        return f"#{steps[n // 36]:02x}{steps[(n // 6) % 6]:02x}{steps[n % 6]:02x}"
    gray = 8 + 10 * (n - 232)
    return f"#{gray:02x}{gray:02x}{gray:02x}"


def apply(codes: list[int], style: dict[str, object]) -> None:
    """Update `style` with one SGR sequence's codes."""
    i = 0
    while i < len(codes):
        code = codes[i]
        if code == 0:
            style.clear()
        elif code == 1:
            style["bold"] = True
        elif code == 3:
            style["italic"] = True
        elif code == 4:
            style["underline"] = True
        elif code == 7:
            style["reverse"] = True
        elif code == 22:
            style.pop("bold", None)
        elif code == 23:
            style.pop("italic", None)
        elif code == 24:
            style.pop("underline", None)
        elif code == 27:
            style.pop("reverse", None)
        elif 30 <= code <= 37:
            style["fg"] = BASIC[code - 30]
        elif 90 <= code <= 97:
            style["fg"] = BASIC[code - 90 + 8]
        elif 40 <= code <= 47:
            style["bg"] = BASIC[code - 40]
        elif 100 <= code <= 107:
            style["bg"] = BASIC[code - 100 + 8]
        elif code == 39:
            style.pop("fg", None)
        elif code == 49:
            style.pop("bg", None)
        elif code in (38, 48) and i + 1 < len(codes):
            key = "fg" if code == 38 else "bg"
            if codes[i + 1] == 5 and i + 2 < len(codes):
                style[key] = color256(codes[i + 2])
                i += 2
            elif codes[i + 1] == 2 and i + 4 < len(codes):
                red, green, blue = codes[i + 2 : i + 5]
                style[key] = f"#{red:02x}{green:02x}{blue:02x}"
                i += 4
        i += 1


def css(style: dict[str, object]) -> str:
    """The inline CSS of a text run."""
    fg, bg = style.get("fg", FOREGROUND), style.get("bg", BACKGROUND)
    if style.get("reverse"):
        fg, bg = bg, fg
    parts = [f"color:{fg}", f"background:{bg}"]
    if style.get("bold"):
        parts.append("font-weight:bold")
    if style.get("italic"):
        parts.append("font-style:italic")
    if style.get("underline"):
        parts.append("text-decoration:underline")
    return ";".join(parts)


def to_html(screen: str, title: str) -> str:
    """The whole page for a captured screen."""
    out: list[str] = []
    style: dict[str, object] = {}
    for line in screen.rstrip("\n").split("\n"):
        position = 0
        for match in SGR.finditer(line):
            text = line[position : match.start()]
            if text:
                out.append(f'<span style="{css(style)}">{html.escape(text)}</span>')
            codes = [int(c) if c else 0 for c in re.split("[;:]", match.group(1))]
            apply(codes, style)
            position = match.end()
        text = line[position:]
        if text:
            out.append(f'<span style="{css(style)}">{html.escape(text)}</span>')
        out.append("\n")
    body = "".join(out)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>body{{margin:0;background:{BACKGROUND}}}pre{{margin:0;padding:8px;"
        "font:15px/1.3 'DejaVu Sans Mono',monospace;"
        f"color:{FOREGROUND}}}</style></head><body><pre>{body}</pre></body></html>"
    )


if __name__ == "__main__":
    sys.stdout.write(to_html(sys.stdin.read(), sys.argv[1] if len(sys.argv) > 1 else "screen"))
