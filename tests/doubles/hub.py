"""TEST DOUBLE of the parts of `huggingface_hub.HfApi` that `gen export` uses. Not the Hub.

The Hub cannot be reached from CI, and its uploads of binary files go through
LFS or Xet storage, which a small local server cannot stand in for. This
double keeps the real method signatures (keyword-only arguments included),
answers `get_paths_info` with real `RepoFile` objects built from the JSON the
Hub returns, records every call, and keeps a copy of each file an
`upload_folder` call would send, so tests check the exact calls and files.
"""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from huggingface_hub.hf_api import RepoFile


@dataclass
class Repo:
    private: bool | None
    files: dict[str, bytes] = field(default_factory=dict)


class RecordingHfApi:
    repos: ClassVar[dict[str, Repo]] = {}
    calls: ClassVar[list[tuple[str, dict[str, Any]]]] = []
    tokens: ClassVar[list[str | None]] = []
    fail_on_upload: ClassVar[int | None] = None  # raise on the n-th upload_folder call

    def __init__(self, endpoint: str | None = None, token: str | bool | None = None, **kwargs: Any):
        RecordingHfApi.tokens.append(token)

    @classmethod
    def reset(cls) -> None:
        cls.repos, cls.calls, cls.tokens, cls.fail_on_upload = {}, [], [], None

    def create_repo(
        self,
        repo_id: str,
        *,
        token: str | bool | None = None,
        private: bool | None = None,
        repo_type: str | None = None,
        exist_ok: bool = False,
        **kwargs: Any,
    ) -> str:
        self.calls.append(
            (
                "create_repo",
                {
                    "repo_id": repo_id,
                    "private": private,
                    "repo_type": repo_type,
                    "exist_ok": exist_ok,
                },
            )
        )
        if repo_id in self.repos and not exist_ok:
            raise RuntimeError("409 Conflict: repository already exists")
        self.repos.setdefault(repo_id, Repo(private=private))
        return f"https://huggingface.co/datasets/{repo_id}"

    def get_paths_info(
        self,
        repo_id: str,
        paths: list[str] | str,
        *,
        expand: bool = False,
        revision: str | None = None,
        repo_type: str | None = None,
        token: str | bool | None = None,
    ) -> list[RepoFile]:
        paths = [paths] if isinstance(paths, str) else paths
        self.calls.append(
            ("get_paths_info", {"repo_id": repo_id, "paths": list(paths), "repo_type": repo_type})
        )
        files = self.repos[repo_id].files
        return [
            RepoFile(
                path=p,
                size=len(files[p]),
                oid=hashlib.sha1(files[p]).hexdigest(),
                lfs={
                    "oid": hashlib.sha256(files[p]).hexdigest(),
                    "size": len(files[p]),
                    "pointerSize": 134,
                },
            )
            for p in paths
            if p in files
        ]

    def upload_folder(
        self,
        *,
        repo_id: str,
        folder_path: str | Path,
        path_in_repo: str | None = None,
        commit_message: str | None = None,
        repo_type: str | None = None,
        allow_patterns: list[str] | str | None = None,
        ignore_patterns: list[str] | str | None = None,
        **kwargs: Any,
    ) -> str:
        uploads = sum(1 for name, _ in self.calls if name == "upload_folder")
        if self.fail_on_upload is not None and uploads + 1 == self.fail_on_upload:
            raise ConnectionError("connection reset by peer")
        root = Path(folder_path)
        patterns = [allow_patterns] if isinstance(allow_patterns, str) else allow_patterns
        sent = {}
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            relative = path.relative_to(root).as_posix()
            if patterns is None or any(fnmatch.fnmatch(relative, pat) for pat in patterns):
                sent[relative] = path.read_bytes()
        self.calls.append(
            (
                "upload_folder",
                {
                    "repo_id": repo_id,
                    "repo_type": repo_type,
                    "files": sorted(sent),
                    "commit_message": commit_message,
                },
            )
        )
        self.repos[repo_id].files.update(sent)
        return f"https://huggingface.co/datasets/{repo_id}/commit/0"
