"""Where a batch's files live: a local folder or any fsspec URL (file://, s3://, gs://, a
shared file system path, memory:// inside one process).

    OUT/manifest.jsonl         one JSON line per finished or failed job (latest line per key wins)
    OUT/<nnn>-<slug>-<key6>/   one self-contained run folder per job (config.yaml, metrics.jsonl,
                               checkpoints/, previews/, model.ply, ...)

The manifest is written only by the batch's driver, whole and atomically (a local file is
replaced by rename; on an object store one PUT of the whole object), so a killed driver
leaves the previous manifest or the new one, never half of one. A run folder is written
where its job runs: straight into OUT when OUT is a local path, else into a local staging
folder whose checkpoints are uploaded as they are saved (a retried job on another machine
resumes from them) and whose files are all uploaded when the job ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Iterator

from core.errors import UserError
from core.io import write_text

MANIFEST = "manifest.jsonl"


class BatchOut:
    """A batch's output location, opened through fsspec. Pickles as its URL, so a worker
    process reopens it with its own credentials (memory:// is private to each process)."""

    def __init__(self, url: str | Path):
        import fsspec

        self.url = str(url)
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url)
        except ImportError as e:  # fsspec names the package that serves the protocol
            raise UserError(f"--out {self.url}: {e}") from None
        except ValueError as e:
            raise UserError(f"--out {self.url}: {e}; give a folder or an fsspec URL (s3://..., file://...)") from None
        self.is_local = "file" in _protocols(self.fs)
        if self.is_local:
            self.root = str(Path(self.root).absolute())
        else:
            self.root = self.root.rstrip("/")
        if self.fs.isfile(self.root):
            raise UserError(f"--out {self.url} is a file; give a folder")

    def __getstate__(self) -> dict:
        return {"url": self.root if self.is_local else self.url}  # a worker's cwd is not the driver's

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["url"])

    @property
    def shared_between_processes(self) -> bool:
        return "memory" not in _protocols(self.fs)

    def child(self, name: str) -> str:
        """Path (local out) or URL of a run folder, as the manifest records it."""
        if self.is_local:
            return str(Path(self.root) / name)
        return f"{self.url.rstrip('/')}/{name}"

    # --- manifest: read by anyone, written by the driver only ---------------------------

    def read_manifest(self) -> list[dict]:
        """Every record of OUT/manifest.jsonl in order (a line a crash cut is skipped)."""
        path = f"{self.root}/{MANIFEST}"
        if not self.fs.isfile(path):
            return []
        records = []
        for line in self.fs.cat_file(path).decode().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash of an older, appending writer
                continue
        return records

    def write_manifest(self, records: list[dict]) -> None:
        """Replace OUT/manifest.jsonl with `records`, atomically."""
        text = "".join(json.dumps(r) + "\n" for r in records)
        if self.is_local:
            write_text(Path(self.root) / MANIFEST, text)
            return
        self.fs.makedirs(self.root, exist_ok=True)
        tmp = f"{self.root}/.{MANIFEST}.{uuid.uuid4().hex[:8]}"
        self.fs.pipe_file(tmp, text.encode())
        self.fs.mv(tmp, f"{self.root}/{MANIFEST}")

    # --- run folders: written where the job runs -----------------------------------------

    @contextlib.contextmanager
    def job_folder(self, name: str) -> Iterator[tuple[Path, Callable[[], None]]]:
        """(local folder to run the job in, sync) for run folder `name`. For a local out the
        folder is the run folder itself and sync does nothing; otherwise it is a staging
        folder filled with what OUT already holds of the job (its checkpoints, to resume),
        sync() uploads checkpoints saved since the last call, and every file is uploaded
        when the block ends, however it ends."""
        if self.is_local:
            folder = Path(self.root) / name
            folder.mkdir(parents=True, exist_ok=True)
            yield folder, lambda: None
            return
        remote = f"{self.root}/{name}"
        staging = Path(tempfile.mkdtemp(prefix=f"scorelift-{name[:20]}-"))
        try:
            if self.fs.isdir(remote):
                for path in self.fs.find(remote):
                    target = staging / path[len(remote) + 1:]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    self.fs.get_file(path, str(target))
            uploaded: dict[Path, float] = {p: p.stat().st_mtime for p in staging.rglob("*") if p.is_file()}

            def sync() -> None:
                changed = [p for p in (staging / "checkpoints").glob("*.pt") if uploaded.get(p) != p.stat().st_mtime]
                if changed:
                    self._upload(staging, remote, [*changed, staging / "metrics.jsonl"], uploaded)

            try:
                yield staging, sync
            finally:
                self._upload(staging, remote, [p for p in staging.rglob("*") if p.is_file()], uploaded)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _upload(self, staging: Path, remote: str, files: list[Path], uploaded: dict[Path, float]) -> None:
        for path in files:
            if not path.is_file() or path.name.startswith("."):  # atomic writers' temporary files
                continue
            mtime = path.stat().st_mtime
            if uploaded.get(path) == mtime:
                continue
            target = f"{remote}/{path.relative_to(staging).as_posix()}"
            self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            self.fs.put_file(str(path), target)
            uploaded[path] = mtime

    def published(self, name: str, folder: Path, paths: dict) -> dict[str, str]:
        """A job's output paths (in its local folder) as the manifest records them: where
        they lie in OUT."""
        out = {}
        for key, path in paths.items():
            if path is None:
                continue
            relative = os.path.relpath(path, folder)
            out[key] = str(path) if self.is_local else f"{self.child(name)}/{Path(relative).as_posix()}"
        return out


def _protocols(fs) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)
