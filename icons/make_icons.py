"""Draws the app icon (a grid of 'experts', some lit, on a dark rounded tile) as RGBA PNGs.

Run: python3 icons/make_icons.py  (no dependencies beyond the standard library)."""
import math, struct, zlib, os

def png(path, w, h, px):
    raw = b"".join(b"\x00" + bytes(px[y * w * 4:(y + 1) * w * 4]) for y in range(h))
    def chunk(t, d):
        c = struct.pack(">I", len(d)) + t + d
        return c + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    open(path, "wb").write(data)

LIT = {(0, 1), (1, 3), (2, 0), (2, 2), (3, 1), (3, 3)}

def draw(n):
    px = bytearray(n * n * 4)
    r = n * 0.22
    for y in range(n):
        for x in range(n):
            # rounded-square mask
            dx = max(r - x, 0, x - (n - 1 - r)); dy = max(r - y, 0, y - (n - 1 - r))
            d = math.hypot(dx, dy)
            a = max(0.0, min(1.0, r - d + 0.5))
            t = (x + y) / (2 * n)
            col = (int(22 + 18 * t), int(26 + 14 * t), int(46 + 40 * t))
            # 4x4 expert grid
            g = (x / n - 0.16) / 0.68 * 4; h = (y / n - 0.16) / 0.68 * 4
            gi, hi = int(g), int(h)
            if 0 <= g < 4 and 0 <= h < 4:
                fx, fy = g - gi - 0.5, h - hi - 0.5
                if abs(fx) < 0.34 and abs(fy) < 0.34:
                    col = (124, 92, 255) if (hi, gi) in LIT else (60, 66, 96)
            i = (y * n + x) * 4
            px[i:i + 4] = bytes((*col, int(255 * a)))
    return px

here = os.path.dirname(os.path.abspath(__file__))
for name, n in [("32x32.png", 32), ("128x128.png", 128), ("128x128@2x.png", 256), ("icon.png", 512)]:
    png(os.path.join(here, name), n, n, draw(n))
