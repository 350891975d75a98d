"""trimesh's ray-triangle intersector without rtree (not installed here): its broad phase in numpy."""

import numpy as np


class BoxTree:
    """The broad phase trimesh's ray intersector gets from rtree: triangles whose bounding box
    overlaps a query box. triangles [F,3,3]; `intersection(box)` takes (min xyz, max xyz)."""

    def __init__(self, triangles):
        self.lo, self.hi = triangles.min(1), triangles.max(1)
        self.bounds = np.concatenate([self.lo.min(0), self.hi.max(0)])

    def intersection(self, box):
        return np.nonzero(((self.lo <= box[3:]) & (self.hi >= box[:3])).all(1))[0]
