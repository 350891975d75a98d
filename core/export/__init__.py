"""Asset export. Splat files (.ply/.splat) live with their representation in
renderers/gaussian/ply.py; frames and turntable videos are here."""

from core.export.video import TurntableResult, render_frames, turntable, write_frames, write_png, write_video

__all__ = ["TurntableResult", "render_frames", "turntable", "write_frames", "write_png", "write_video"]
