"""Asset export. Splat files (.ply/.splat) live with their representation in
renderers/gaussian/ply.py; frames and turntable videos are here (single PNGs: core.io.write_png)."""

from core.export.video import TurntableResult, render_frames, turntable, write_frames, write_video

__all__ = ["TurntableResult", "render_frames", "turntable", "write_frames", "write_video"]
