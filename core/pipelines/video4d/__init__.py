"""Decompose-recompose 4D from a monocular video (DreamScene4D, issue #12): see docs/video4d.md."""
